"""Scoring answers with the model: the log-likelihood of option texts given a clip."""

from __future__ import annotations

import torch

from llavaction.constants import IGNORE_INDEX
from llavaction.model import LlavaVideoModel
from llavaction.prompts import PromptEncoder, PromptOptions, build_question, pad_right


def option_text_loglik(model: LlavaVideoModel, encoder: PromptEncoder, visual_tokens: torch.Tensor, num_frames: int,
                       options: list[list[str]], width: int) -> torch.Tensor:
    """[B, width] summed log-likelihood of each option's text (and its end token) as the answer to the
    direct-narration question about clip b (visual_tokens: encode_video of the B clips of num_frames frames); -inf
    where a question has no option. A row without options (padding) still runs one ignored prompt, so every rank
    runs the same collectives under FSDP."""
    device = visual_tokens.device
    question = build_question({}, "narration", num_frames, PromptOptions())
    owners, rows = [], []
    for b, texts in enumerate(options):
        for k, text in enumerate(texts or [""]):
            owners.append((b, k if texts else None))
            rows.append(encoder.encode(question, text, visual_tokens.shape[1]))
    tokens = {k: v.to(device) for k, v in pad_right([(r.input_ids, r.labels) for r in rows],
                                                    encoder.tokenizer.pad_token_id).items()}
    index = torch.tensor([b for b, _ in owners], device=device)
    out = model(tokens["input_ids"], None, tokens["attention_mask"], tokens["labels"], logits_for="labels",
                visual_tokens=visual_tokens[index])
    targets = out.labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    token_logp = out.logits.float().log_softmax(-1).gather(1, targets[supervised][:, None]).squeeze(1)
    per_row = torch.zeros(len(rows), device=device, dtype=torch.float32).index_add_(
        0, supervised.nonzero()[:, 0], token_logp)
    scores = torch.full((len(options), width), float("-inf"), device=device, dtype=torch.float32)
    real = [i for i, (_, k) in enumerate(owners) if k is not None]
    scores[index[real], torch.tensor([owners[i][1] for i in real], device=device, dtype=torch.long)] = per_row[real]
    return scores


def head_class_scores(action_logits: list[tuple[torch.Tensor, ...]] | None, rows: int) -> list[dict]:
    """Per row, the action heads' verb and noun scores at the last head layer read (EK-100 figures, candidate sets);
    empty dicts for a forward pass without heads."""
    if action_logits is None:
        return [{}] * rows
    verb, noun, _ = action_logits[-1]
    return [{"verb_scores": v, "noun_scores": n} for v, n in zip(verb.float().tolist(), noun.float().tolist())]
