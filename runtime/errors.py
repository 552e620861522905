"""The one exception type for user mistakes.

The command line turns a ``TinyconvError`` into a one-line message and exit status 2; anything
else is a bug in tinyconv and keeps its traceback.
"""


class TinyconvError(Exception):
    """A problem with the user's input (model, data, arguments, device), not with tinyconv."""


class ModelFileError(TinyconvError):
    """A ``.tcm`` file that is missing, truncated, corrupt or from a newer tinyconv."""
