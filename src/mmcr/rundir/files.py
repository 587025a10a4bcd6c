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
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from mmcr.rundir import layout

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

    return write_atomic(path, lambda f: torch.save(obj, f), what)


def open_append(path: str | Path, what: str = "file") -> IO[str]:
    """Open ``path`` for appending text, creating it with the usual permissions, but never through a
    symbolic link: a run directory received from someone else may hold a ``report.md`` that links to
    one of your files, and appending must not write there (:class:`RunFileError` says so)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise RunFileError(f"{path} is a symbolic link; mmcr never writes {what} through a link (it could "
                               "point anywhere): remove the link, or use another output folder") from e
        raise RunFileError(f"cannot write {what}: {describe_write_failure(path, e)}") from e
    return os.fdopen(fd, "a")


def check_inside(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """``path`` when its folder lies inside ``root`` once links are resolved: a run's ``eval/`` that
    links elsewhere must not receive the evaluation's files."""
    path = Path(path)
    where, root_at = _resolved(path.parent), _resolved(root)
    if not where.is_relative_to(root_at):
        raise RunFileError(f"{path} would be written to {where}, outside {root} (a symbolic link); mmcr never "
                           f"writes {what} through links out of a run: remove the link or pass --out")
    return path


def _resolved(p: Path) -> Path:
    """Where ``p`` lands: its existing part with links resolved, then the part still to be created."""
    p, rest = Path(os.path.abspath(p)), []
    while not p.exists() and p != p.parent:
        rest.append(p.name)
        p = p.parent
    return p.resolve().joinpath(*reversed(rest))


def check_output(path: str | Path, source: str | Path | None = None, what: str = "output") -> Path:
    """``path`` unless writing it would replace a run's own checkpoint or record (``checkpoints/``,
    ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``report.md`` of a run directory) or the model
    ``source`` itself; else a :class:`RunFileError` naming the file and what to do."""

    path = Path(path)
    reason = layout.protected_reason(path)
    if reason is None and source is not None and Path(str(source)).is_file() and path.exists():
        if os.path.samefile(path, str(source)):
            reason = "the model source itself"
    if reason is not None:
        raise RunFileError(f"refusing to write {what} to {path}: it is {reason}, which an output must never "
                           "replace; choose another path (e.g. a new file or folder outside checkpoints/)")
    return path


class RunLock:
    """An exclusive lock (``fcntl.flock``) on a run directory, held from a run's start to its end, so that
    a second process on the same directory is refused instead of mixing its records with the first's.

    The lock file (``.mmcr.lock``) holds the owner's pid and host for the refusal message. A directory
    made only for the lock is removed again on release if nothing else was written into it."""

    NAME = ".mmcr.lock"

    def __init__(self, directory: str | Path):
        import fcntl  # Unix only: imported where the lock is taken

        self.directory = Path(directory)
        self.path = self.directory / self.NAME
        self._created = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            raise RunFileError(f"cannot use {self.directory} as a run directory: "
                               f"{describe_write_failure(self.path, e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFileError(f"{self.directory} is in use by another mmcr run ({owner}); wait for it to end, "
                               "or choose another --out") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created and [p.name for p in self.directory.iterdir()] == [self.NAME]:
            self.path.unlink(missing_ok=True)  # still holding the lock: nobody else can be using it
            self.directory.rmdir()
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG through :func:`write_atomic` (a linked file is replaced, never followed)."""
    return write_atomic(path, lambda f: fig.savefig(f, dpi=dpi, format="png"), what="plot")
