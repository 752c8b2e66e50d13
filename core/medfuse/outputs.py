"""Output safety for every command that writes: one lock per output, a writability check before
any work, and atomic file writes.

* :func:`output_lock` takes ``<out>.lock`` (beside the output file or folder) atomically
  (``O_CREAT | O_EXCL``); the file holds JSON with ``pid``, ``host``, ``started`` and
  ``command``. A second run on the same output refuses with :class:`OutputBusyError`, naming the
  holder. A lock left by a process that is gone (same host, pid no longer running) is taken over
  with a note; a lock from another host is never taken over (delete it by hand once that run is
  known to be dead). The lock is released when the ``with`` block ends, however it ends; a run
  killed with SIGKILL leaves its lock, which the next run on the same host takes over.
* :func:`check_writable` creates the output folder (and its parents) and probes it by creating
  and removing a file, so a read-only or impossible location fails before any work.
* :func:`atomic_output` yields a temporary path in the target's folder; when the block succeeds
  the file is fsynced and renamed over the target (``os.replace``), otherwise it is removed. A full
  disk (``ENOSPC``/``EDQUOT``) becomes an :class:`OutputError` saying nothing was written.
  :func:`write_text` and :func:`write_bytes` are the one-call forms.

Known limit: a dead holder is recognised by its pid alone, so a pid reused by an unrelated
process keeps the lock until that process ends (the message says which file to delete).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import MedfuseError

LOCK_SUFFIX = ".lock"
UNREADABLE_LOCK_GRACE_S = 60.0  # a lock file still empty/garbled after this long is stale
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class OutputError(MedfuseError):
    """An output cannot be written (read-only location, full disk)."""


class OutputBusyError(OutputError):
    """Another run holds the lock of the same output."""


# ---- writability ----------------------------------------------------------------------------------

def check_writable(folder: str | Path, *, what: str = "output") -> Path:
    """Create ``folder`` (with parents) if needed and prove it writable by creating and removing a
    probe file; raise :class:`OutputError` naming the folder otherwise."""
    folder = Path(folder) if str(folder) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".medfuse-probe-{os.getpid()}-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the {what} here ({exc.strerror or exc}); "
                          "choose another location or fix its permissions") from None
    return folder


# ---- atomic files ---------------------------------------------------------------------------------

def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk or exhausted quota (also as reported by pyarrow)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in _DISK_FULL:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _fsync(path: Path | str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or is_disk_full(exc):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; write the whole file there. On success it is
    fsynced (``durable``) and renamed over ``target``; on any failure it is removed and ``target``
    is left as it was. A full disk raises :class:`OutputError` ("nothing was written")."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies, as for a plain open
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
        if durable:
            _fsync(target.parent, directory=True)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise OutputError(f"disk full while writing {target}; nothing was written "
                              "(free space or choose another location, then rerun)") from exc
        raise


def write_bytes(target: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_output`)."""
    target = Path(target)
    with atomic_output(target, durable=durable) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: str | Path, text: str, *, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Write ``text`` to ``target`` atomically (see :func:`atomic_output`)."""
    return write_bytes(target, text.encode(encoding), durable=durable)


# ---- the lock -------------------------------------------------------------------------------------

def lock_path(out: str | Path) -> Path:
    """The lock file of ``out``: ``<out>.lock`` beside it (for a file or a folder)."""
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return " ".join(argv)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holder_text(info: dict[str, Any]) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


class OutputLock:
    """The held lock of one output; a context manager that releases it on exit."""

    def __init__(self, out: str | Path, command: str | None = None,
                 note: Callable[[str], None] | None = None):
        self.out = Path(out)
        self.path = lock_path(self.out)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "command": command or _command(), "token": secrets.token_hex(8)}
        self.note = note if note is not None else (lambda line: print(line, file=sys.stderr))
        self.taken_over: dict[str, Any] | None = None
        self.held = False

    def acquire(self) -> OutputLock:
        """Take the lock, taking over a dead holder's; raise :class:`OutputBusyError` if it is held."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as exc:
                raise OutputError(f"{self.path.parent}: cannot create the lock {self.path.name} "
                                  f"({exc.strerror or exc}); is the output location writable?") from None
            try:
                os.write(fd, (json.dumps(self.info) + "\n").encode())
            finally:
                os.close(fd)
            self.held = True
            return self
        raise OutputBusyError(f"{self.out}: could not take the lock {self.path} (other runs keep taking it)")

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _take_over_if_stale(self) -> None:
        """Remove the existing lock if its holder is gone; otherwise raise OutputBusyError."""
        info = self._read(self.path)
        if info == {}:  # released meanwhile: try again
            return
        if info is None:  # being written right now, or garbled by a crash
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < UNREADABLE_LOCK_GRACE_S:
                raise OutputBusyError(f"{self.out}: another run is taking the lock {self.path} right now; "
                                      f"wait for it, or delete {self.path} if no run uses this output")
            reason = f"an unreadable lock file {age:.0f} s old"
        else:
            same_host = info.get("host") == socket.gethostname()
            pid = info.get("pid")
            if not (same_host and isinstance(pid, int) and not _pid_alive(pid)):
                where = "" if same_host else " (on another host: it cannot be checked from here)"
                raise OutputBusyError(
                    f"{self.out}: in use by another run: {_holder_text(info)}{where}. Wait for it to finish, "
                    f"or use another output; if that run is dead, delete {self.path} and rerun")
            reason = f"a lock left by {_holder_text(info)}, which is no longer running"
        # rename first: of two runs taking over the same stale lock, only one succeeds
        grave = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        moved = self._read(grave)
        if moved != info and info is not None:  # someone else took over in between: put theirs back
            with contextlib.suppress(OSError):
                os.link(grave, self.path)
            grave.unlink(missing_ok=True)
            raise OutputBusyError(f"{self.out}: in use by another run: {_holder_text(moved or {})}")
        grave.unlink(missing_ok=True)
        self.taken_over = info or {}
        self.note(f"note: took over {self.path}: {reason}")

    def release(self) -> None:
        """Remove the lock file, if it is still ours."""
        if not self.held:
            return
        self.held = False
        current = self._read(self.path)
        if current and current.get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def output_lock(out: str | Path, command: str | None = None, note: Callable[[str], None] | None = None) -> OutputLock:
    """An unacquired :class:`OutputLock` on ``out``: use it as ``with output_lock(out): ...``."""
    return OutputLock(out, command, note)


@contextlib.contextmanager
def guarded_output(*outs: str | Path | None, command: str | None = None,
                   note: Callable[[str], None] | None = None, folder: bool = False,
                   create: bool = False) -> Iterator[None]:
    """Before any work: check that each output's location is writable, then hold each output's
    lock for the duration of the block. ``folder``: the outputs are folders (``create``: made and
    probed now, for writers that fill them in place); else files. ``None`` entries are skipped."""
    paths = [Path(o) for o in outs if o is not None]
    for p in paths:
        if folder and p.exists() and not p.is_dir():
            raise OutputError(f"{p}: exists and is not a folder; choose another output folder")
        if not folder and p.is_dir():
            raise OutputError(f"{p}: is a folder; the output must be a file name")
        check_writable(p.parent)
    with contextlib.ExitStack() as stack:
        for p in paths:
            stack.enter_context(output_lock(p, command, note))
        if folder and create:
            for p in paths:
                if not p.exists():
                    stack.callback(_remove_if_empty, p)  # a run that fails early leaves no empty folder
                check_writable(p)
        yield


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when empty


# ---- label images (instances found by scoring and segmentation) ---------------------------------

def write_mask_png(target: Path, mask: Any, *, labels: bool = False) -> None:
    """A mask as a PNG, atomically: 8-bit (a canonical 0/1/2 mask), or 16-bit with ``labels``
    (an instance label image, one value per object)."""
    import numpy as np
    from PIL import Image

    from .errors import InvalidInputError

    if labels and mask.max(initial=0) > 65535:
        raise InvalidInputError(f"{target}: {int(mask.max())} objects do not fit a 16-bit label PNG")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        Image.fromarray(mask.astype(np.uint16 if labels else np.uint8)).save(tmp, format="PNG")


def write_label_png(target: Path, labels: Any) -> None:
    """An instance label image (an integer array) as a 16-bit PNG, atomically."""
    write_mask_png(target, labels, labels=True)


def label_png_paths(paths: list[str], root: str | Path | None = None) -> list[str]:
    """Where each image's label PNG goes under the masks folder: its path relative to ``root``
    (default: the images' common folder), suffix ``.png``."""
    if not paths:
        return []
    base = os.path.abspath(root) if root is not None else os.path.commonpath(
        [os.path.dirname(os.path.abspath(p)) for p in paths])
    return [str(Path(os.path.relpath(os.path.abspath(p), base)).with_suffix(".png")) for p in paths]
