"""Evaluation as a library: EK-100-MQA of a checkpoint (mqa), EPIC action-recognition figures and the challenge
submission of a scores file (ek100), candidate re-ranking to class scores (candidates), checkpoints and the settings
they were trained with (checkpoints). `python -m llavaction.cli.evaluate` is the command line over it."""
