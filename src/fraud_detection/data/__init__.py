"""Raw data: the transaction simulator and the schema of what it writes."""
