"""EK-100-MQA as a benchmark: the answer rule and prediction records (answers.py)."""
