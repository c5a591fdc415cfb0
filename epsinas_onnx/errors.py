"""Errors a user can fix. The CLI prints them as one line and exits 1."""


class UserError(ValueError):
    """Bad input: the message names the problem and, where possible, the fix."""
