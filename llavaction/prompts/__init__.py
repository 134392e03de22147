"""Prompts in one place: the reference's wording (wording.py), the chat text and tokenisation every path shares
(encoding.py), and the tiny preset's locally built tokenizer (tokenizer.py)."""
