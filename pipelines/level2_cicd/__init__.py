"""Level 2: CI/CD pipeline automation: the level-1 flows deployed with ``prefect deploy``."""
