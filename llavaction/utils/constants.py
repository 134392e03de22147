"""Conventions shared by the model, the prompts and the data pipeline."""

IMAGE_TOKEN_INDEX = -200  # the placeholder id in input_ids that the model replaces by the visual tokens
IGNORE_INDEX = -100  # label of tokens that carry no loss
IMAGE_PLACEHOLDER = "<image>"
SYSTEM_MESSAGE = "You are a helpful assistant."
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
