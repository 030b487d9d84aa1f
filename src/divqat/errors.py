"""The one error type users see: raised for bad input, printed as one line by the CLI."""


class DivqatError(Exception):
    """A problem with the user's input or files; the message is the whole explanation."""
