"""EPIC-KITCHENS-100 knowledge: the annotation CSVs, class texts, action ids and index, tail and unseen splits, prior
actions (annotations.py), and EPIC's action-recognition metrics (metrics.py). No torch-model imports."""
