"""Writing the files a run keeps so that nothing is ever half-written or lost.

Every file goes to a temporary file in the target's folder, is flushed to disk, then renamed over the
target (atomic on POSIX): a kill, a crash or a full disk leaves the previous version in place. The
result gets the permissions any new file of the user gets (0666 minus the umask), not the private
0600 of ``tempfile``. A failed write raises :class:`RunFileError` with one line that says what
happened (disk full, permission denied, ...) and that the previous file is kept.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunFileError(ValueError):
    """A file of a run could not be written; the message names the file, the cause and the fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """What ``open()``/``mkdir()`` would give a new file/folder: 0666/0777 minus the umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch reports a failed write as a RuntimeError ('unexpected pos')
    whose context is the OSError the file raised."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_write_failure(path: Path, exc: BaseException) -> str:
    err = _os_error(exc)
    if err is not None and err.errno in _FULL:
        return f"disk full while writing {path} ({err.strerror}); free space on that disk"
    if err is not None and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({err.strerror}); choose a folder you can write to"
    if err is not None:
        return f"cannot write {path} ({err.strerror})"
    return f"cannot write {path} ({type(exc).__name__}: {exc})"


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], what: str = "file") -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync, then rename it to ``path``.

    On any failure the temporary file is removed, ``path`` keeps its previous content, and a
    :class:`RunFileError` says why (``what`` names the file's role in the message).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise RunFileError(f"cannot write {what}: {describe_write_failure(path, e)}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        kept = " the previous one is kept;" if path.exists() else ""
        raise RunFileError(f"cannot write {what}:{kept} {describe_write_failure(path, e)}") from e
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems cannot fsync folders; the file itself is on disk
        pass
    return path


def write_text_atomic(path: str | Path, text: str, what: str = "file") -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()), what)


def save_torch_atomic(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """``torch.save`` through :func:`write_atomic`."""
    import torch

    return write_atomic(path, lambda f: torch.save(obj, f), what)
