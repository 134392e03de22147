"""The GRPO stage: LlavaActionModule's model, optimiser, schedule, sharding, checkpoints and validation (MQA by the
paper's rule, with intervals), trained from rewards on MQA questions. Each training batch: the questions' G
completions each drawn by the model's own generation (experience.py), their rewards (rewards.py) and advantages, then
`ppo_epochs` optimizer steps on the GRPO loss (objective.py), optionally with a KL term to the frozen starting policy
(reference.py) and the supervised loss on the ground-truth answers."""

from __future__ import annotations

import copy
import dataclasses
import time
from contextlib import contextmanager

import torch

from llavaction.data.batch import Batch
from llavaction.data.options import SampleFormat
from llavaction.evaluation.checkpoint_format import ExportLayout
from llavaction.evaluation.options import EvaluationOptions
from llavaction.model.families import DEFAULT_BACKBONE, Backbone
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.prompts.tasks import TASKS
from llavaction.training.grpo import report
from llavaction.training.grpo.experience import Collector, Experience
from llavaction.training.grpo.objective import CompletionTokens, grpo_loss
from llavaction.training.grpo.options import ObjectiveOptions, RewardOptions, RolloutOptions
from llavaction.training.grpo.reference import ReferencePolicy
from llavaction.training.grpo.rewards import build_rewards, final_answer
from llavaction.training.grpo.rollouts import Sampler, rollout_generator, supervised_rows, token_scores
from llavaction.training.grpo.served import ServedSampler
from llavaction.training.module import LlavaActionModule
from llavaction.training.options import OptimizerOptions, TrainableParts
from llavaction.utils.checks import as_options, check_count

# GRPO's optimiser: AdamW at 1e-6 for every part (Video-R1, EasyR1, verl, TRL), weight decay 0.01 (Video-R1, EasyR1),
# no warmup (verl, EasyR1); the schedule is the training module's cosine (Video-R1's).
GRPO_OPTIMIZER = OptimizerOptions(lr=1e-6, vision_lr=1e-6, weight_decay=0.01, warmup_ratio=0.0)


class GRPOModule(LlavaActionModule):
    """Reinforcement learning from verifiable rewards on EK-100-MQA (GRPO and its DAPO / GSPO forms), for every
    backbone; validation as the supervised stage's."""

    def __init__(
        self,
        backbone: Backbone = DEFAULT_BACKBONE,
        preset_name: str | None = "tiny",
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        family_options: dict | None = None,
        trainable: TrainableParts = TrainableParts(),
        optimizer: OptimizerOptions = GRPO_OPTIMIZER,
        compute: ComputeOptions = ComputeOptions(),
        action: ActionSupervision = ActionSupervision(),
        evaluation: EvaluationOptions = EvaluationOptions(),
        export_dir: str | None = None,
        export_layout: ExportLayout = "original",
        architecture: dict | None = None,
        video_format: dict | None = None,
        rollout: RolloutOptions = RolloutOptions(),
        rewards: RewardOptions = RewardOptions(),
        objective: ObjectiveOptions = ObjectiveOptions(),
        reasoning: bool = False,
        log_completions_every_n_steps: int = 50,
    ):
        """
        Args:
            backbone: as LlavaActionModule's.
            preset_name: as LlavaActionModule's.
            checkpoint: the policy to start from: a training checkpoint (`.ckpt`, e.g. a supervised run's
                last.ckpt), an export folder or a hub id; its family must be model.backbone.
            tokenizer: as LlavaActionModule's.
            family_options: as LlavaActionModule's.
            trainable: which parts are updated (the action token(s) and heads stay as trained, unless the supervised
                loss is mixed in with action supervision on).
            optimizer: learning rates, weight decay and warmup (GRPO's: 1e-6, 0.01, none).
            compute: as LlavaActionModule's.
            action: action supervision, trained only by the supervised loss (objective.sft_weight).
            evaluation: how validation answers (the supervised stage's).
            export_dir: as LlavaActionModule's.
            export_layout: as LlavaActionModule's.
            architecture: recorded by training; leave unset.
            video_format: recorded by training; leave unset.
            rollout: how each question's completions are sampled.
            rewards: the rewards and their weights.
            objective: advantages, the loss, clipping, KL, updates per batch, the supervised loss's weight.
            reasoning: the MQA prompts (rollouts and validation) ask for reasoning in <think> </think> first, and the
                paper's rule reads the answer after it.
            log_completions_every_n_steps: every this many optimizer steps, a TensorBoard text table of a few
                questions with their completions, rewards and advantages (0: never).
        """
        groups = {
            name: as_options(kind, value)
            for name, kind, value in (
                ("rollout", RolloutOptions, rollout),
                ("rewards", RewardOptions, rewards),
                ("objective", ObjectiveOptions, objective),
            )
        }
        check_count("model.log_completions_every_n_steps", log_completions_every_n_steps, minimum=0)
        reward_functions = build_rewards(groups["rewards"], reasoning)
        super().__init__(
            backbone,
            preset_name,
            checkpoint,
            tokenizer,
            family_options,
            trainable,
            optimizer,
            compute,
            action,
            evaluation,
            export_dir,
            export_layout,
            architecture,
            video_format,
        )
        self.automatic_optimization = False
        self.rollout, self.objective = groups["rollout"], groups["objective"]
        self.reasoning, self.log_every = reasoning, log_completions_every_n_steps
        if self.rollout.engine == "vllm":
            sampler = ServedSampler(self.tokenizer, self.rollout, self.video_format)
        else:
            sampler = Sampler(self.tokenizer, self.rollout)
        self.collect = Collector(sampler, reward_functions, groups["rewards"], self.rollout, reasoning)
        self.reference: ReferencePolicy | None = None  # held outside the module's state: never in its checkpoints
        self.gradient_clip: tuple[float, str] | None = None

    @property
    def sample_format(self) -> dict:
        """Prompts only (the rollouts answer them), with the reasoning format when asked."""
        return dataclasses.asdict(SampleFormat(answers=False, reasoning=self.reasoning))

    @property
    def updates_per_batch(self) -> int:
        return self.objective.ppo_epochs

    def final_answer(self, generation: str) -> str:
        return final_answer(generation, self.reasoning)

    def trains_heads(self) -> bool:
        """The action token(s) and heads stay as trained unless the supervised loss trains them."""
        return self.objective.sft_weight > 0 and self.action.mode is not None

    def configure_callbacks(self):
        """Manual optimization clips gradients itself: Lightning refuses the trainer's gradient_clip_val with it (in a
        check that follows this hook), so the value is taken here and applied at every optimizer step."""
        trainer = self.trainer
        if trainer.gradient_clip_val:
            self.gradient_clip = (float(trainer.gradient_clip_val), trainer.gradient_clip_algorithm or "norm")
            trainer.gradient_clip_val = None
        return []

    def build_model(self) -> torch.nn.Module:
        """The policy; with beta > 0 also the frozen reference, a copy of the same start prepared alike (sharded as
        the policy is)."""
        start = self.starting_model()
        if self.objective.beta > 0 and self.reference is None:
            self.reference = ReferencePolicy(self.prepare(copy.deepcopy(start)))
        return self.prepare(start)

    def setup(self, stage: str) -> None:
        """Before any rollout: MQA questions with their answers, as prompts only."""
        super().setup(stage)
        data = getattr(self._trainer, "datamodule", None)
        if stage != "fit" or data is None:
            return
        for number, source in enumerate(data.train_sources):
            # the rewards read a question's options and its right one (the paper's answer rule)
            if not {"options", "answer_index"} <= set(TASKS.get(source.task).fields):
                raise ValueError(
                    f"data.train[{number}] ({source.shards}) is task {source.task!r}: the GRPO stage learns from "
                    "multiple-choice questions' rewards only (a task whose records carry options and answer_index)"
                )
        missing = data.unanswered()
        if missing is not None:
            raise ValueError(f"{missing}: the GRPO stage rewards answers against it")
        if dataclasses.asdict(data.sample_format) != self.sample_format:
            raise ValueError(f"data.sample_format is {data.sample_format}; the GRPO stage needs {self.sample_format}")
        if self.rollout.engine == "vllm":
            if self.family.vllm_architecture is None:
                raise ValueError(f"model.rollout.engine 'vllm': vLLM does not run the {self.family.name} family here")
            if self.trainer.world_size > 1:
                raise ValueError(
                    f"model.rollout.engine 'vllm' serves one training process (one engine beside it), not "
                    f"{self.trainer.world_size}: use engine 'model'"
                )

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.place(self)

    def teardown(self, stage: str) -> None:
        self.collect.sampler.close()  # a vLLM engine's worker stops with the fit
        super().teardown(stage)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        step, timings = self.global_step, {}
        model = self.model
        generator = rollout_generator(self.rollout.seed, step, self.global_rank, self.device)
        pixels = model.preprocess(batch.frames, batch.clips)
        with self._timed(timings, "push"):
            self.collect.sampler.serve(self)
        with self._timed(timings, "rollout"), torch.no_grad(), evaluating(model):
            experience = self.collect(model, batch, pixels, generator, self.objective.scale_rewards)
        with self._timed(timings, "reference"):
            banned, reference = self.collect.sampler.banned, self.reference
            ref_logp = reference.logp(experience, pixels, self.rollout.temperature, banned) if reference else None
        with self._timed(timings, "update"):
            figures = self._update(experience, pixels, ref_logp, batch)
        figures |= {f"time/{name}": seconds for name, seconds in timings.items()}
        figures["rollout_tokens_per_second"] = experience.generated / max(timings["rollout"], 1e-9)
        if self.reference is not None:  # what the KL term costs in memory on this rank
            figures["reference_memory_gib"] = self.reference.parameter_bytes() / 2**30
        report.log_step(self, experience, figures, len(batch))
        if self.log_every and step % self.log_every == 0:
            report.log_completions(self, experience, step)

    def _update(self, experience: Experience, pixels, ref_logp: torch.Tensor | None, batch: Batch) -> dict:
        """ppo_epochs optimizer steps on the experience; the figures of the first (the rollout's policy)."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        model, objective, figures, old = self.model, self.objective, {}, None
        for epoch in range(objective.ppo_epochs):
            visual = model.encode_video(pixels)
            rows, temperature = experience.rows, self.rollout.temperature
            pack, banned = self.compute.pack_sequences, self.collect.sampler.banned
            scores = token_scores(model, rows, visual[experience.question], temperature, pack, banned)
            old = scores.logp.detach() if old is None else old  # the first update's policy is the rollout's
            tokens = CompletionTokens(scores.logp, old, scores.row, len(experience.kept), ref_logp)
            terms = grpo_loss(
                tokens,
                experience.advantages,
                experience.kept,
                objective.loss,
                objective.clip,
                objective.beta,
                token_total=experience.kept_tokens,
                row_total=experience.kept_rows,
            )
            loss = terms.loss
            if objective.sft_weight > 0:
                sft = supervised_rows(self.tokenizer, batch, self.collect.sampler.eos)
                sft_loss = model(sft["input_ids"], None, sft["attention_mask"], sft["labels"], visual_tokens=visual)
                loss = loss + objective.sft_weight * sft_loss.loss
                figures.setdefault("sft_loss", sft_loss.loss.detach())
            optimizer.zero_grad()
            self.manual_backward(loss)
            if self.gradient_clip is not None:
                self.clip_gradients(optimizer, self.gradient_clip[0], self.gradient_clip[1])
            optimizer.step()
            scheduler.step()
            if epoch == 0:
                kept_tokens = experience.kept[scores.row]
                entropy = scores.entropy[kept_tokens].mean() if kept_tokens.any() else torch.zeros(())
                figures |= {"loss": loss.detach(), "kl": terms.kl, "clip_fraction": terms.clip_fraction}
                figures["entropy"] = entropy
            else:
                figures["clip_fraction"] = terms.clip_fraction  # the last update's: how far the policy moved
        return figures

    @contextmanager
    def _timed(self, timings: dict, name: str):
        """Seconds of a phase (waiting for the GPU's queued work at its end)."""
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings[name] = time.perf_counter() - start


@contextmanager
def evaluating(model: torch.nn.Module):
    """The model in eval mode (no dropout) for the rollouts, back in train mode after: the same weights, no copy."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
