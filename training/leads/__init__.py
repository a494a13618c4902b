"""The lead-scoring model: feature spec, LightGBM fit, calibrated scores and bands, reasons, MLflow job."""
