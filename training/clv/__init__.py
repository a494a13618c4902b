"""Customer lifetime value: BG/NBD and Gamma-Gamma fits, predictions and segments, MLflow job."""
