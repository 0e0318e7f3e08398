"""Exceptions shared by the whole package."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad option, mismatched checkpoint...).

    The CLI prints its message as a single line and exits with a non-zero status, without a
    traceback. The message should name the bad input and say what would fix it.
    """


class CheckpointMismatchError(UserError):
    """A checkpoint's keys or shapes do not match the architecture it is loaded into."""


class DatasetFormatError(UserError):
    """A dataset file is missing or malformed; the message names the file and what was expected."""
