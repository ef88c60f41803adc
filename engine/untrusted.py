"""Reading files that someone else may have written: bounded in size and nesting, confined to their folder, never
executed. Every run.json, checkpoint metadata file, metrics line and checkpoint weights file the engine reads goes
through here, so a damaged or hostile file ends in one `UntrustedFileError` that says why, never in a traceback,
an endless read (`/dev/zero`) or a file outside the run (`../../elsewhere`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 16 * 2**20  # run.json and checkpoint metadata are a few kB; metrics are read in slices of this
MAX_JSON_DEPTH = 32  # ours nest 4 deep
MAX_WEIGHTS_BYTES = 64 * 2**30  # the paper's 256x256 model with EMA and Adam state is ~1.8 GB


class UntrustedFileError(ValueError):
    """A file that cannot be used as it is; the message says why (without the file's name: callers add it)."""


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a device, a FIFO or a folder is refused)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UntrustedFileError(f"cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFileError("is not a regular file")
    if info.st_size > limit:
        raise UntrustedFileError(f"is {info.st_size:,} bytes, more than the {limit:,} such a file may have")
    try:
        with open(path, "rb") as f:
            data = f.read(info.st_size + 1)  # one byte more tells whether it grew meanwhile
    except OSError as e:
        raise UntrustedFileError(f"cannot be read ({e.strerror})") from None
    if len(data) > info.st_size:
        raise UntrustedFileError("grew while being read (is something still writing it?)")
    return data


def parse_json(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as UTF-8 bytes -> its value, refusing invalid text and nesting deeper than `max_depth`."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UntrustedFileError("is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UntrustedFileError(f"is not valid JSON ({e})") from None
    except RecursionError:
        raise UntrustedFileError(f"nests deeper than {max_depth} levels") from None
    if _depth_exceeds(value, max_depth):
        raise UntrustedFileError(f"nests deeper than {max_depth} levels")
    return value


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file, bounded in size and depth. FileNotFoundError passes through (callers say what is missing)."""
    return parse_json(read_bounded(path, limit), max_depth)


def read_record(path: str | Path, file_format: str, what: str) -> dict[str, Any]:
    """A JSON object of ours: bounded like `read_json`, and marked `"format": file_format` (else it "is not a DDPM
    Studio {what}"). The callers check the version, which means something different for each kind of file."""
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != file_format:
        raise UntrustedFileError(f"is not a DDPM Studio {what}")
    return record


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]  # iterative: a hostile file must not exhaust the interpreter's stack
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def sibling(folder: Path, name: object) -> Path:
    """`folder / name` for a plain file name recorded in a file we did not write: no separators, no `..`, and,
    after following links, still inside `folder`."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UntrustedFileError(f"names {name!r}, which is not a file name in its own folder")
    path = folder / name
    try:
        inside = path.resolve().parent == folder.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UntrustedFileError(f"names {name!r}, which leads outside its folder")
    return path
