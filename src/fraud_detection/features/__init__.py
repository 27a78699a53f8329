"""Feature definitions: pure pandas/numpy functions shared by offline tables and serving."""
