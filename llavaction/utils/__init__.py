"""Utilities of every layer: outputs written whole by one writer (files.py), JSON lines (jsonl.py), one-line errors
(errors.py), checked values (checks.py), stacked configs (configs.py), figures (figures.py), conventions (constants.py)."""
