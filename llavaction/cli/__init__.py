"""Entry points only: each parses its typed options and calls library functions."""
