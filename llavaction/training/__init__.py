"""Training: the LightningModule (module.py), its callbacks, the optimiser and schedule, losses, sharding (FSDP2,
activation checkpointing and compile by block class), FLOPs for MFU, typed options, the ablation runner's library."""
