"""Data loading: sample stages (stages.py), training and evaluation streams (streams.py), the LightningDataModule."""
