"""A lead model's training data: where its rows come from (CRM snapshots or a flat file), which columns it may use."""
