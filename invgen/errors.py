"""Errors that carry one clear sentence for the user.

The CLI catches `InvgenError` and prints only its message, so everything a user can get wrong (a file, a
line, a config field) should surface as one of these rather than as a traceback from deep inside torch.
"""


class InvgenError(Exception):
    """Base class: the message is meant to be shown to the user as is."""


class InvgenDataError(InvgenError):
    """An image set on disk is missing, malformed or inconsistent."""


class InvgenConfigError(InvgenError):
    """A config file or a command-line override is invalid."""


class InvgenModelError(InvgenError):
    """A model or adapter cannot be loaded or does not fit the pipeline it is attached to."""


class InvgenTrainingError(InvgenError):
    """Training cannot go on (for example, the loss became NaN)."""
