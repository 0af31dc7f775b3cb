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


class InvgenOutputError(InvgenError):
    """An output cannot be written: the disk is full or read-only, or permission is denied."""


def shown(path: object) -> str:
    """A path (or any user text) as it goes into an error message: as is when printable, else quoted with
    escapes, so that a newline or control character in a file name cannot split the one-line error."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def one_line(message: object) -> str:
    """The message of an error as one printable line (the CLI's last guard for texts not passed to `shown`)."""
    text = str(message)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when it has none), for a one-sentence error
    that wraps a library's multi-line one; cut to `limit` characters when given."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
