"""Orchestration: the level-1 Prefect flows (CT, the new-data sensor, the signal trigger,
batch scoring, monitoring), thin tasks over the package's own steps."""
