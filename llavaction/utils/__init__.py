"""Utilities of every layer: typed command options (options.py), outputs written whole by one writer (files.py), JSON
lines (jsonl.py), one-line errors (errors.py), checked values (checks.py), stacked configs (configs.py), figures
(figures.py), model-hub ids (hub.py), the code version (version.py), conventions (constants.py)."""
