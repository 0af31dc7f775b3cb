"""Atomic writes: a killed process never leaves a half-written file or folder behind.

Everything is written next to its destination under a temporary name and moved into place with
`os.replace`, which is atomic on POSIX file systems when source and destination share a directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (`os.umask` can only swap)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # briefly the strictest mask, so a file another thread creates meanwhile stays private
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            # mkstemp made the file 0600: give it the mode any other new file of the user's would get.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if (error := write_error(path, e)) is not None:
            raise error from None
        raise


def json_text(data: Any, where: str | os.PathLike, **kwargs: Any) -> str:
    """`json.dumps(data)`, refusing NaN and infinity (which JSON cannot hold) with one sentence naming the key."""
    try:
        return json.dumps(data, allow_nan=False, **kwargs)
    except ValueError:
        from invgen.errors import InvgenDataError, shown

        key = _non_finite_key(data)
        if key is None:
            raise
        raise InvgenDataError(
            f"{shown(where)}: {key or 'the value'} is not a finite number, and JSON cannot hold NaN or infinity"
        ) from None


def _non_finite_key(data: Any, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or infinite float in `data` ("" for `data` itself), or None."""
    if isinstance(data, float):
        return None if math.isfinite(data) else prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite_key(v, f"{prefix}.{k}" if prefix else str(k))
        if found is not None:
            return found
    return None


def write_json(path: str | os.PathLike, data: Any) -> None:
    text = json_text(data, path, indent=2, sort_keys=False)  # before the file is opened: a refusal writes nothing
    with atomic_file(path) as f:
        f.write(text + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it becomes `path` (replacing an old one)."""
    path = Path(path)
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            # Move the old folder aside first so that `path` is never missing a complete version.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (error := write_error(path, e)) is not None:
            raise error from None
        raise


# The write failures a user can fix (a full or read-only disk, missing permission), in words.
_WRITE_FAILURES = {
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission is denied",
    errno.EPERM: "permission is denied",
}


def write_error(path: str | os.PathLike, error: BaseException) -> Exception | None:
    """The one-sentence `InvgenOutputError` for `error` raised while writing `path`, or None when `error` is not
    a full disk, a read-only disk or a permission problem (those stay tracebacks: they are bugs)."""
    if not isinstance(error, OSError) or error.errno not in _WRITE_FAILURES:
        return None
    from invgen.errors import InvgenOutputError, shown

    return InvgenOutputError(f"cannot write {shown(path)}: {_WRITE_FAILURES[error.errno]}")


@contextlib.contextmanager
def reporting_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Around code that writes `path`: a full or read-only disk or a permission error becomes one sentence."""
    try:
        yield
    except OSError as e:
        if (error := write_error(path, e)) is None:
            raise
        raise error from None
