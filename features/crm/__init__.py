"""The CRM: its tables and their rules, the database, importing exports and reading it as of a date."""
