"""How a clip's answer is shown (`llavaction predict`): as text, the action heads' top classes (named when the class
lists are given), and the frames the model saw as a strip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llavaction.utils.figures import pyplot, save_png


def top_classes(
    verb_logits: torch.Tensor,
    noun_logits: torch.Tensor,
    k: int = 5,
    names: tuple[dict[int, str], dict[int, str]] | None = None,
) -> dict:
    """The heads' top-k verbs, nouns and actions (EPIC's verb x noun ranking) with their probabilities, each
    [class id, probability] and, given the class lists' names, the name third."""
    from llavaction.ek100.metrics import action_topk

    verb_p, noun_p = verb_logits.softmax(-1), noun_logits.softmax(-1)
    verbs, nouns = verb_p.topk(k), noun_p.topk(k)
    action_v, action_n = action_topk(verb_logits[None], noun_logits[None], k)
    verb_names, noun_names = names or ({}, {})

    def entry(key, p, name: str | None) -> list:
        return [key, round(float(p), 4)] + ([name] if names else [])

    return {
        "top_verbs": [entry(int(c), p, verb_names.get(int(c), "?")) for p, c in zip(*verbs)],
        "top_nouns": [entry(int(c), p, noun_names.get(int(c), "?")) for p, c in zip(*nouns)],
        "top_actions": [
            entry(
                f"{int(v)}:{int(n)}",
                verb_p[v] * noun_p[n],
                f"{verb_names.get(int(v), '?')} {noun_names.get(int(n), '?')}",
            )
            for v, n in zip(action_v[0], action_n[0])
        ],
    }


def save_strip(frames: np.ndarray, caption: str, path: Path) -> None:
    """The frames the model saw in a row (upscaled to at least 128 px), the answer under them."""
    plt = pyplot()
    columns = min(len(frames), 8)
    rows = -(-len(frames) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, frame in zip(axes.flat, frames):
        axis.imshow(frame, interpolation="nearest")
    figure.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, path, dpi=100)


def describe(result: dict) -> str:
    """An answer as text: the option the paper's rule reads in it (and the letter it names, where that is another
    option), the heads' top classes (named when their names are known)."""
    lines = [f"{result['name']} ({result['start']:.2f}-{result['end']:.2f} s): {result['answer']}"]
    if "chosen_option" in result:
        chosen, letter = result["chosen_option"], result.get("answer_letter")
        lines.append(
            f"  chosen option (the paper's rule, by its text): {result['chosen_letter']}. {chosen}"
            if chosen is not None
            else "  the answer's text matches none of the options (the paper's rule)"
        )
        if letter is not None and letter != result.get("chosen_letter"):
            lines.append(f"  note: the answer's letter {letter} names another option; the paper's rule reads its text")
    for key in ("top_verbs", "top_nouns", "top_actions"):
        if key in result:
            named = all(len(item) == 3 for item in result[key])
            entries = [
                f"{item[2]} ({item[0]}) {item[1]:.2f}" if named else f"{item[0]} {item[1]:.2f}" for item in result[key]
            ]
            label = key.replace("_", " ") + ("" if named else " (class ids; --annotations names them)")
            lines.append(f"  {label}: " + ", ".join(entries))
    return "\n".join(lines)
