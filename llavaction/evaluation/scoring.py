"""Answering MQA questions with the model: greedy generation, option-letter logits, option-text likelihood, and the
action heads' class scores, all from one encoding of each clip."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llavaction.data.batch import Batch
from llavaction.evaluation.options import MAX_NEW_TOKENS
from llavaction.prompts.encoding import PromptEncoder, VisualSpan, pad_right
from llavaction.prompts.formats import VideoFormat
from llavaction.prompts.tasks import user_text
from llavaction.prompts.wording import MAX_OPTIONS, PromptOptions
from llavaction.utils.constants import IGNORE_INDEX


@dataclass
class BatchAnswers:
    """What the model says about a batch of MQA questions."""

    scores: dict[str, torch.Tensor]  # 'letter' / 'likelihood' -> [B, 26] option scores, -inf beyond the options
    generations: list[str] | None  # greedy answers, when asked
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None  # the heads' logits per layer read


def letter_scores(logits: torch.Tensor, letter_ids: list[int], num_options: torch.Tensor) -> torch.Tensor:
    """[B, 26] next-token logits of the option letters; letters beyond a question's options -inf."""
    scores = logits.float()[:, letter_ids]
    beyond = torch.arange(len(letter_ids), device=scores.device)[None] >= num_options[:, None]
    return scores.masked_fill(beyond, float("-inf"))


def option_text_loglik(
    model: torch.nn.Module,
    encoder: PromptEncoder,
    visual_tokens,
    spans: list[VisualSpan],
    options: list[list[str]],
    width: int = MAX_OPTIONS,
) -> torch.Tensor:
    """[B, width] summed log-likelihood of each option's text (and its end token) as the answer to the
    direct-narration question about clip b (visual_tokens: encode_video of the B clips; spans: what each clip takes
    in a prompt); -inf where a question has no option. A row without options (padding) still runs one ignored prompt,
    so every rank runs the same collectives under FSDP."""
    device = encoder_device(model)
    question = user_text({}, "narration", 0, PromptOptions())  # no time instruction: no frame count in it
    owners, rows = [], []
    for b, texts in enumerate(options):
        for k, text in enumerate(texts or [""]):
            owners.append((b, k if texts else None))
            rows.append(encoder.encode(question, text, spans[b]))
    tokens = {
        k: v.to(device)
        for k, v in pad_right([(r.input_ids, r.labels) for r in rows], encoder.tokenizer.pad_token_id).items()
    }
    index = torch.tensor([b for b, _ in owners], device=device)
    out = model(
        tokens["input_ids"], None, tokens["attention_mask"], tokens["labels"], visual_tokens=visual_tokens[index]
    )
    targets = out.labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    token_logp = out.logits.float().log_softmax(-1).gather(1, targets[supervised][:, None]).squeeze(1)
    per_row = torch.zeros(len(rows), device=device, dtype=torch.float32).index_add_(
        0, supervised.nonzero()[:, 0], token_logp
    )
    scores = torch.full((len(options), width), float("-inf"), device=device, dtype=torch.float32)
    real = [i for i, (_, k) in enumerate(owners) if k is not None]
    scores[index[real], torch.tensor([owners[i][1] for i in real], device=device, dtype=torch.long)] = per_row[real]
    return scores


def encoder_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class MQAAnswerer:
    """Answers a collated batch of MQA prompts by the asked modes, encoding each clip once: generation gives the
    letter logits from its first step (and the heads from its prompt pass); otherwise one forward pass serves letters
    and heads; likelihood runs the option texts against the same visual tokens."""

    def __init__(self, model: torch.nn.Module, tokenizer, chat: VideoFormat, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.encoder = PromptEncoder(tokenizer, chat=chat)
        self.letter_ids = self.encoder.letter_token_ids(MAX_OPTIONS)

    @torch.no_grad()
    def __call__(self, batch: Batch, modes: tuple[str, ...], head_layers: str | None = None) -> BatchAnswers:
        model = self.model
        visual = model.encode_video(model.preprocess(batch.frames, batch.clips))
        scores, generations, first_logits, heads = {}, None, None, None
        if "generate" in modes:
            eos = self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)
            generation = model.generate(
                batch.input_ids,
                None,
                batch.attention_mask,
                visual_tokens=visual,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=self.tokenizer.pad_token_id,
                read_heads=head_layers == "last",
            )
            generations = [self.tokenizer.decode(t, skip_special_tokens=True) for t in generation.tokens]
            first_logits, heads = generation.first_logits, generation.action_logits
        if first_logits is None and "letter" in modes or head_layers is not None and heads is None:
            out = model.last_logits(
                batch.input_ids, None, batch.attention_mask, visual_tokens=visual, head_layers=head_layers
            )
            first_logits = out.logits if first_logits is None else first_logits
            heads = out.action_logits
        if "letter" in modes:
            scores["letter"] = letter_scores(first_logits, self.letter_ids, batch.num_options)
        if "likelihood" in modes:
            spans = [self.encoder.visual(clip, batch.frames.shape[2]) for clip in batch.clips]
            scores["likelihood"] = option_text_loglik(
                model, self.encoder, visual, spans, [m["options"] for m in batch.meta]
            )
        return BatchAnswers(scores=scores, generations=generations, action_logits=heads)


def head_class_scores(action_logits: list[tuple[torch.Tensor, ...]] | None, rows: int) -> list[dict]:
    """Per row, the action heads' verb and noun scores at the last head layer read (EK-100 figures, candidate sets);
    empty dicts for a forward pass without heads."""
    if action_logits is None:
        return [{}] * rows
    verb, noun, _ = action_logits[-1]
    return [{"verb_scores": v, "noun_scores": n} for v, n in zip(verb.float().tolist(), noun.float().tolist())]
