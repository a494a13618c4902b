"""The commands that keep models right over time: monitor, retrain, and the registry's models (list, rollback)."""
