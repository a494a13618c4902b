"""Model fitting, evaluation and MLflow tracking for lead scoring and customer lifetime value."""
