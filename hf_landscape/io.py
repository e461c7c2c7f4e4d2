"""Files: atomic writes, the lock of an output folder, checks of a folder before work, hashing, JSON-safe values.

Every file hf_landscape writes goes through `write_bytes` (or its wrappers for text, JSON, safetensors and
figures): the content goes to a temporary with an unpredictable name, created exclusively inside the target
folder (`tempfile.mkstemp`: `O_CREAT | O_EXCL | O_NOFOLLOW`), is flushed and `fsync`ed, and is renamed over the
final name with `os.replace`; then the folder itself is `fsync`ed, so the rename survives a power cut. A final
name is never opened for writing: a link planted there is replaced by the rename, never written through, and a
crash leaves either the old file or the new one, never half of one. `durable=False` skips the two `fsync`s (the
rename is still atomic, so a killed process never leaves half a file; only a power cut can lose the write): the
periodic saves of a running grid use it, since the `fsync`s cost milliseconds per save (`benchmarks/checkpoint_writes.py`;
numbers in docs/guarantees.md).

`folder_lock` gives a run exclusive use of its folder (`fcntl.flock` on `.hf_landscape.lock` inside it, opened
with `O_NOFOLLOW`); a second run is refused at once with the holder's pid. What does not live here: what the
files hold (`surface.py`, `engine/checkpoint.py`, `callbacks.py`, ...).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SurfaceError

LOCK_NAME = ".hf_landscape.lock"
# Serialize safetensors in memory (one write of the bytes) up to this size; larger ones are written by safetensors
# itself into the exclusively created temporary, so a large snapshot is never held twice in memory.
IN_MEMORY_SAFETENSORS_BYTES = 256 * 2**20


# --- atomic writes ---------------------------------------------------------------------------------------------


def _file_mode() -> int:
    """The mode a plain `open(..., "w")` would give a new file (0o666 less the umask), read without changing the
    process's umask (`/proc/self/status` on Linux; 0o644 elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd` (the one place file content is written)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make renames and removals in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_with(path: str | os.PathLike, fill: Callable[[int, Path], None], durable: bool = True) -> Path:
    """Create an exclusive temporary next to `path`, let `fill(fd, temporary)` write it, fsync it (if `durable`),
    and rename it over `path`; on any failure the temporary is removed and `path` is left as it was."""
    path = Path(path)
    folder = path.parent
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        try:
            mode = _file_mode()
            os.fchmod(fd, mode)
            fill(fd, tmp)
            # A writer given the name (safetensors' `save_file`, h5py, ...) may have made a new file there: give it the
            # same mode as every other file, and sync the file the name holds.
            replaced = os.fstat(fd).st_ino != os.stat(tmp).st_ino
            if replaced:
                os.chmod(tmp, mode)
            if durable:
                os.fsync(fd)
                if replaced:
                    _fsync_path(tmp)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_folder(folder)
    return path


def write_with(path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = True) -> Path:
    """Let `write(temporary)` fill a temporary created exclusively beside `path` (for writers that take a file name:
    h5py, trimesh, pyarrow), then rename it over `path` as `write_bytes` does; on any failure the temporary is removed
    and `path` is left as it was. The folder must exist."""
    return _replace_with(path, lambda fd, tmp: write(tmp), durable)


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically and (unless `durable=False`) durably, see the module docstring; the folder
    must exist."""
    return _replace_with(path, lambda fd, tmp: _write_all(fd, data), durable)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """`write_bytes` of `text` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike, value: Any, *, durable: bool = True) -> Path:
    """`value` as sorted, indented JSON (NaN and inf kept as JSON's extensions), written atomically."""
    return write_text(path, json.dumps(value, sort_keys=True, indent=2, allow_nan=True) + "\n", durable=durable)


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> str:
    """Write `tensors` (name -> CPU tensor) as safetensors to `path`, atomically; return the file's SHA-256."""
    import safetensors.torch

    tensors = dict(tensors)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    meta = dict(metadata) if metadata is not None else None
    if nbytes <= IN_MEMORY_SAFETENSORS_BYTES:
        data = safetensors.torch.save(tensors, metadata=meta)
        write_bytes(path, data, durable=durable)
        return hashlib.sha256(data).hexdigest()
    digest: dict[str, str] = {}

    def fill(fd: int, tmp: Path) -> None:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)  # into the temporary this call created
        digest["sha256"] = sha256_file(tmp)

    _replace_with(path, fill, durable)
    return digest["sha256"]


def save_figure(path: str | os.PathLike, figure: Any, *, dpi: int = 120) -> Path:
    """Render a matplotlib `Figure` in the format of `path`'s suffix and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower(), dpi=dpi)
    return write_bytes(path, buffer.getvalue())


def remove(path: str | os.PathLike) -> None:
    """Remove `path` (a link is removed, never what it points to); no error if it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- hashing and JSON-safe values ------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return sha256_of(iter(lambda: f.read(1 << 20), b""))


def sha256_of(chunks: Iterable[bytes]) -> str:
    """The SHA-256 of the bytes of `chunks`, one after the other, as hex (fingerprints of data, ids of surfaces)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (tuples to lists, numpy scalars and arrays to numbers and lists, other objects
    such as paths and dtypes to strings).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape.io import jsonable
    >>> jsonable({"steps": (3, np.int64(4)), "span": np.array([-1.0, 1.0])})
    {'steps': [3, 4], 'span': [-1.0, 1.0]}

    ```
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- output folders: checks before work, and the lock of a run ---------------------------------------------------


def _probe_write(folder: Path) -> None:
    """Create and remove an exclusive temporary in `folder`: the one sure test that files can be written there
    (permission bits say nothing for root or on a read-only file system)."""
    fd, name = tempfile.mkstemp(prefix=".hf_landscape_probe.", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_output_folder(
    folder: str | os.PathLike,
    *,
    argument: str,
    need_bytes: int = 0,
    names: tuple[str, ...] = (),
) -> None:
    """Refuse, without writing anything, a `folder` that cannot take the output: a file, a path under a file, a
    disk with less than `need_bytes` free, or one of the `names` to be written that is a folder.

    Raises:
        SurfaceError: naming `argument`, the folder, what is wrong and the fix.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise SurfaceError(f"`{argument}` {str(path)!r} is a file; pass a folder path (it is created if needed).")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SurfaceError(
            f"`{argument}` {str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder; pass a folder path."
        )
    for name in names:
        if (path / name).is_dir() and not (path / name).is_symlink():
            raise SurfaceError(
                f"`{argument}` {str(path)!r} holds {name!r}, which is a folder, but hf_landscape writes a file of "
                "that name; move it away or choose another folder."
            )
    if need_bytes:
        free = shutil.disk_usage(existing).free
        if free < need_bytes:
            raise SurfaceError(
                f"`{argument}` {str(path)!r} is on a disk with {free} bytes free, and this run writes about "
                f"{need_bytes}; free some space or choose a folder on another disk."
            )


def make_output_folder(folder: str | os.PathLike, *, argument: str) -> bool:
    """Create `folder` if needed and check that a file can be written in it; True if it was created here.

    Raises:
        SurfaceError: it cannot be created or written.
    """
    path = Path(folder)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SurfaceError(
            f"`{argument}` {str(path)!r} cannot be created ({err.strerror or err}); pass a folder you can write to."
        ) from None
    try:
        _probe_write(path)
    except OSError as err:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise SurfaceError(
            f"`{argument}` {str(path)!r} is not writable ({err.strerror or err}); pass a folder you can write to."
        ) from None
    return created


# Locks this process holds: (device, inode) of the folder -> [thread id, open lock file, depth].
_HELD: dict[tuple[int, int], list[Any]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, argument: str) -> Iterator[None]:
    """Hold the exclusive lock of `folder` (which must exist) for the block.

    The lock is `fcntl.flock` on `folder/.hf_landscape.lock`, opened with `O_NOFOLLOW` (a link planted at that name
    is removed, never followed), holding the holder's pid; the file is removed when the lock is released, and a
    crashed holder's lock is released by the kernel. The same thread may take it again inside the block.

    Raises:
        SurfaceError: another process (or another thread of this one) holds it: naming `argument`, the pid and the
            fix. Nothing is written.
    """
    path = Path(folder)
    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == me:
            held[2] += 1
            reentered = True
        elif held is not None:
            raise SurfaceError(
                f"`{argument}` {str(path)!r} is in use by another run in this process (pid {os.getpid()}); wait for "
                "it to finish, or choose another folder."
            )
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key][2] -= 1
        return
    fd = _acquire(path / LOCK_NAME, argument, path)
    with _HELD_GUARD:
        _HELD[key] = [me, fd, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK_NAME)  # still holding the lock: nobody can take this file between unlink and close
        os.close(fd)


def _acquire(lock: Path, argument: str, folder: Path) -> int:
    import fcntl

    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        try:
            fd = os.open(lock, flags, _file_mode())
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link planted at the lock's name: remove the link, never follow it
                remove(lock)
                continue
            raise SurfaceError(
                f"`{argument}` {str(folder)!r} cannot be locked ({err.strerror or err}); pass a folder you can write to."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise SurfaceError(
                f"`{argument}` {str(folder)!r} is in use by another hf_landscape run ({holder}, holding "
                f"{LOCK_NAME}); wait for it to finish, or choose another folder."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released and removed the file between our open and our lock: take the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    raise SurfaceError(f"`{argument}` {str(folder)!r}: its lock file keeps changing; try again.")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
