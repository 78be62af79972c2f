"""Atomic file writes: a reader sees the old file or the new one, never half of one; and the
checks, before any work, that an output can be written where it is asked for.

The data goes to a temp file beside the target, ``.NAME.<pid>.<random>.leditspp-tmp``, which is
renamed over the target. The result gets the mode a plain ``open()`` would give a new file
(``0o666 & ~umask``), not the temp file's 0600. A temp whose process is gone (a write killed by
SIGKILL, power loss) is recognised by its name and removed on the next write of the same target.
A write that fails because of where it goes (a full disk, a quota, a read-only folder) is one
:class:`WriteError` naming the file and the fix, in every command.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LeditsError

TEMP_SUFFIX = ".leditspp-tmp"
_writing: set[str] = set()  # this process's temps in flight (threads may write at once)


#: Write errors of the place written to rather than of one file: full, over quota, read-only, not permitted.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class WriteError(LeditsError):
    """A file that cannot be written where it goes (:data:`DISK_ERRORS`); ``strerror`` says why."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.errno, self.strerror = exc.errno, exc.strerror or str(exc)
        super().__init__(
            f"cannot write {path} ({self.strerror}); the file there before, if any, is intact — free space there "
            "(or make the folder writable, or choose another output) and run again"
        )


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temp)`` to fill a temp file, then rename it over ``path``; return ``path``.

    If ``write`` raises, the temp file is removed and ``path`` is left as it was; a full disk, a
    quota or a read-only folder is a :class:`WriteError`.
    """
    path = Path(path)
    try:
        return _atomic_write(path, write)
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise WriteError(path, exc) from exc
        raise


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    remove_stale_temps(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    _writing.add(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _writing.discard(name)
    return path


LOCK_NAME = ".leditspp-run.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``FOLDER/.leditspp-run.lock`` (created exclusively, holding our pid) for the block.

    A second run writing the same folder is refused while the first one's process lives; a lock
    left by a process that is gone (SIGKILL, power loss) is taken over. Removed on exit, also on
    errors and Ctrl-C."""
    from .errors import LeditsError

    path = Path(folder) / LOCK_NAME
    for _ in range(2):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = path.read_text(encoding="utf-8", errors="replace").strip()
            if owner.isdigit() and _alive(int(owner)) and int(owner) != os.getpid():
                raise LeditsError(
                    f"another run (process {owner}) is writing {folder}; wait for it to finish, or choose "
                    "another output folder"
                ) from None
            path.unlink(missing_ok=True)  # left by a process that is gone
            continue
        except OSError as exc:
            raise LeditsError(
                f"cannot write in {folder} ({exc.strerror or exc}); choose a writable output folder"
            ) from exc
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise LeditsError(f"cannot take the lock {path}; remove it if no run is writing {folder}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Remove temps of ``path`` left by processes that no longer run (or by an earlier us)."""
    prefix = f".{path.name}."
    for name in glob.glob(os.path.join(glob.escape(str(path.parent)), glob.escape(prefix) + "*" + TEMP_SUFFIX)):
        pid = Path(name).name[len(prefix) :].split(".")[0]
        if pid.isdigit() and name not in _writing and not _alive(int(pid)):
            Path(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs; our own pid counts as gone (our live temps are in ``_writing``)."""
    if pid == os.getpid():
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ≥ 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (briefly visible to other threads)
    os.umask(old)
    return old


def check_output(path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output with the wrong suffix or in a folder we cannot write to."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise LeditsError(f"output {path!r} must end in one of {', '.join(suffixes)}")
    if p.is_dir():
        raise LeditsError(f"output {path!r} is a folder; give a file name inside it")
    check_writable_folder(p.parent, f"output {path!r}")


def check_writable_folder(folder: Path, what: str) -> None:
    """Probe ``folder`` by creating (and removing) a file in it: permissions, read-only mounts and
    pseudo file systems all answer truthfully only to an attempt."""
    if not folder.exists():
        raise LeditsError(f"the folder of {what} does not exist; create it first")
    if not folder.is_dir():
        raise LeditsError(f"{what}: {str(folder)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".leditspp-probe-"):
            pass
    except OSError as exc:
        raise LeditsError(f"{what}: cannot write in {str(folder)!r} ({exc.strerror}); choose another place") from exc
