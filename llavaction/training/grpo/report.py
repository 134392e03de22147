"""What a GRPO run shows on TensorBoard: the rewards, accuracy, groups without signal, the loss terms, lengths, the
time split, and every N steps a table of a few questions with their completions, rewards and advantages."""

from __future__ import annotations

import torch

from llavaction.prompts.wording import option_letters
from llavaction.training.grpo.experience import Experience

TABLE_QUESTIONS = 2  # questions shown in a completions table
TABLE_TEXT = 300  # characters of a completion shown


def step_figures(experience: Experience) -> dict[str, float]:
    """The rollouts' figures over the batch's real questions: mean reward and each reward's, accuracy, the share of
    groups all right and all wrong, answers matching no option, completion length, groups without signal."""
    g = experience.completions.group_size
    real = ~experience.padding.repeat_interleave(g)
    count = max(int(real.sum()), 1)
    correct = torch.tensor(experience.completions.correct(), device=real.device)
    groups = correct.view(-1, g)
    real_groups = real.view(-1, g)[:, 0]
    figures = {
        "reward": float(experience.rewards["total"][real].sum()) / count,
        "accuracy": float(correct[real].sum()) / count,
        "frac_all_correct": _share((groups == 1).all(1), real_groups),
        "frac_all_wrong": _share((groups == 0).all(1), real_groups),
        "no_option_matched": experience.no_option / count,
        "completion_length": sum(n for n, r in zip(experience.lengths, real.tolist()) if r) / count,
        "zero_variance_groups": float(experience.zero_variance),
        "refilled_groups": float(experience.refilled),
    }
    for name, values in experience.rewards.items():
        if name != "total":
            figures[f"reward/{name}"] = float(values[real].sum()) / count
    return figures


def _share(flags: torch.Tensor, real: torch.Tensor) -> float:
    return float((flags & real).sum()) / max(int(real.sum()), 1)


def log_step(module, experience: Experience, figures: dict, batch_size: int) -> None:
    """Every figure as `rl/<name>` at this step."""
    values = step_figures(experience) | {k: float(v) for k, v in figures.items()}
    module.log_dict({f"rl/{name}": value for name, value in values.items()}, batch_size=batch_size)
    module.log("train/loss", values["loss"], prog_bar=True, batch_size=batch_size)


def completions_table(experience: Experience, questions: int = TABLE_QUESTIONS) -> str:
    """A Markdown table of the first questions' completions with their rewards and advantages."""
    completions, g = experience.completions, experience.completions.group_size
    lines = []
    for q, meta in enumerate(completions.questions[:questions]):
        letters = option_letters(len(meta["options"]))
        options = ", ".join(f"{letter}. {text}" for letter, text in zip(letters, meta["options"]))
        answer = letters[meta["answer_index"]]
        lines += [f"**{meta.get('narration_id', q)}** (answer {answer}): {options}", ""]
        lines += ["| # | completion | reward | advantage |", "|---|---|---|---|"]
        for j in range(g):
            row = q * g + j
            text = completions.texts[row][:TABLE_TEXT].replace("|", "\\|").replace("\n", " ")
            reward, advantage = float(experience.rewards["total"][row]), float(experience.advantages[row])
            lines.append(f"| {j} | {text} | {reward:.2f} | {advantage:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def log_completions(module, experience: Experience, step: int) -> None:
    """The completions table as TensorBoard text `rl/completions` (on the first rank; loggers without text skip)."""
    logger = module.logger
    experiment = getattr(logger, "experiment", None) if module.global_rank == 0 and logger is not None else None
    if experiment is not None and hasattr(experiment, "add_text"):
        experiment.add_text("rl/completions", completions_table(experience), global_step=step)
