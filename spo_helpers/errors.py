"""Errors a user can fix. The command line prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input or configuration, with a message that names the file and the fix."""


class MissingData(UserError):
    """An input a loader or a figure needs is absent (the message names the file)."""
