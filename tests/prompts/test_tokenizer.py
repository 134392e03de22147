"""The tokenizer beside a checkpoint: an incomplete one refused naming the missing file, not loaded bare."""

import shutil

import pytest

from llavaction.prompts.tokenizer import load_tokenizer


@pytest.mark.parametrize("missing", ["tokenizer_config.json", "tokenizer.json"])
def test_an_incomplete_tokenizer_is_refused_naming_the_file(demo_dir, tmp_path, missing):
    folder = tmp_path / "tokenizer"
    shutil.copytree(demo_dir / "tokenizer", folder)
    assert load_tokenizer(folder).pad_token == "<|endoftext|>"
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{folder}: no {missing}: the tokenizer is incomplete"):
        load_tokenizer(folder)
