"""Tokenizers: the one stored beside a checkpoint (a folder or a hub id), and a small byte-level BPE with Qwen's ChatML
tokens built locally for the tiny presets (no model hub), to which a preset appends its family's special tokens."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llavaction.prompts.encoding import CHAT_TEMPLATE, prompt_vocabulary_corpus
from llavaction.utils.constants import CHATML_SPECIAL_TOKENS, EOS_TOKEN, PAD_TOKEN


def build_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the prompt wording plus `texts` (class names, narrations). Every byte is in the
    alphabet, so any text encodes; option letters are single tokens as in Qwen's tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHATML_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(prompt_vocabulary_corpus() + list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def add_special_tokens(tokenizer, tokens) -> None:
    """Append the tokens the tokenizer lacks as special tokens, in the order given (the ids it had do not change, and
    the same base tokenizer always gives them the same ids): how a preset's tokenizer gains a family's tokens."""
    missing = [token for token in tokens if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def load_tokenizer(directory: str | Path):
    """The tokenizer stored beside a checkpoint (or a tokenizer folder), by local path or hub id."""
    from transformers import AutoTokenizer

    from llavaction.utils.hub import resolve

    folder = Path(str(resolve(directory, "tokenizer")))
    if folder.is_dir():  # without these transformers loads a bare tokenizer (no special tokens) or fails deep inside
        needed = ["tokenizer_config.json"] + ([] if (folder / "vocab.json").exists() else ["tokenizer.json"])
        missing = [name for name in needed if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: no {' and no '.join(missing)}: the tokenizer is incomplete; copy its files beside the "
                "checkpoint (llavaction export writes them) or give --tokenizer"
            )
    return AutoTokenizer.from_pretrained(str(folder))
