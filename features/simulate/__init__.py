"""A simulated CRM with known ground truth: leads, behaviour, conversions, customers, orders, spend."""
