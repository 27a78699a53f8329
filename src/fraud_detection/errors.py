"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class FraudError(Exception):
    """Something the user can fix: the message says what was wrong and what to do."""
