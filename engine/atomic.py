"""Crash-safe file writes: through a temporary file in the same folder, flushed, fsynced and renamed into place.

A process killed at any instant leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()  # read once at import, before any threads, since reading the umask sets it


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; runs are meant to be read by other processes and users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# What `atomic_write` leaves behind when the process dies between creating its temporary file and the rename.
_LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_leftovers(*folders: Path) -> tuple[int, int]:
    """Delete the temporary files of interrupted writes in `folders` (not recursively): (how many, bytes). Only
    for a writer that holds the folder (a live write's temporary file looks the same)."""
    count = size = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if _LEFTOVER.match(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    size += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    count += 1
                except OSError:
                    pass  # gone meanwhile, or not ours to delete: leave it
    return count, size


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))
