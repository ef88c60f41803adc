"""Which kind of source a spec names (`detect_source`), and the two that come as arrays rather than image files:

CIFAR-10   the python version, `cifar-10-batches-py/` or `cifar-10-python.tar.gz`, read by a restricted
           unpickler that can build numpy arrays and nothing else
MNIST IDX  MNIST / Fashion-MNIST `*-images-idx3-ubyte[.gz]`: a file, or the folder that holds them
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from .spec import DataError, SourceKind, Split, flips_by_default, parse_data_spec


class UnsafePickleError(DataError):
    """A CIFAR-10 batch that asks the unpickler for anything but numpy arrays: possibly malicious, never executed."""


# ---- CIFAR-10, python version: a restricted unpickler ----

_CIFAR_BATCHES = {Split.TRAIN: tuple(f"data_batch_{i}" for i in range(1, 6)), Split.TEST: ("test_batch",)}


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused to build {subtype!r}: only plain numpy arrays are allowed")
    module = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    return module._reconstruct(np.ndarray, shape, _numeric_dtype(dtype))


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec, align, copy)
    if dtype.kind not in "biuf":  # object arrays could carry anything; CIFAR-10 holds uint8
        raise UnsafePickleError(f"refused numpy dtype {dtype}: only numeric arrays are allowed")
    return dtype


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1"); no other codec is allowed.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode(..., {encoding!r}): only latin1 byte strings are allowed")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers; any other global is refused before it is touched.

    The CIFAR-10 batches are pickles, and unpickling runs whatever callable a pickle names (os.system ...).
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # how numpy 1.x (and Python 2's CIFAR) name it
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numeric_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle {module}.{name}: a CIFAR-10 batch needs only numpy arrays, "
                "so this file is damaged or malicious"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent reference: CIFAR-10 batches have none")


def read_cifar10_batch(file: IO[bytes], name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """One batch -> (images [n, 3, 32, 32] uint8, labels [n] int64), through RestrictedUnpickler."""
    try:
        batch = RestrictedUnpickler(file, encoding="bytes").load()  # "bytes": the batches were pickled by Python 2
    except UnsafePickleError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure means "not a CIFAR-10 batch"
        raise DataError(f"{name}: not a readable CIFAR-10 batch ({type(error).__name__}: {error})") from error
    if not isinstance(batch, dict):
        raise DataError(f"{name}: a CIFAR-10 batch is a dict, this is a {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{name}: b'data' must be a uint8 array [n, 3072], "
            f"found {getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(v, int) for v in labels):
        raise DataError(f"{name}: b'labels' must be a list of {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)  # rows are R plane, G plane, B plane


_MAX_CIFAR_BATCH_BYTES = 64 * 2**20  # a real batch is 31 MB; a larger one is not read (nor unpickled)


def _check_batch_size(size: int, name: str) -> None:
    if size > _MAX_CIFAR_BATCH_BYTES:
        raise DataError(f"{name}: {size:,} bytes, more than a CIFAR-10 batch has ({_MAX_CIFAR_BATCH_BYTES:,} at most)")


def _cifar_batch_dir(path: Path) -> Path | None:
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder
    return None


def read_cifar10(path: str | os.PathLike, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The folder, the .tar.gz (read in place, nothing extracted) or one batch file -> (images [N, 3, 32, 32], labels
    [N])."""
    path = Path(path)
    wanted = _CIFAR_BATCHES[split]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if path.is_dir():
        folder = _cifar_batch_dir(path)
        if folder is None:
            raise DataError(f"{path}: no data_batch_1 or test_batch in it")
        for name in wanted:
            if not (folder / name).is_file():
                raise DataError(f"{folder}: {name} is missing")
            _check_batch_size((folder / name).stat().st_size, name)
            with open(folder / name, "rb") as f:
                parts.append(read_cifar10_batch(f, name))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            for name in wanted:
                if name not in members:
                    raise DataError(f"{path}: the archive has no {name}")
                _check_batch_size(members[name].size, name)
                parts.append(read_cifar10_batch(archive.extractfile(members[name]), name))
    else:
        _check_batch_size(path.stat().st_size, path.name)
        with open(path, "rb") as f:  # a single batch: the split is whatever the file holds
            parts.append(read_cifar10_batch(f, path.name))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---- MNIST / Fashion-MNIST IDX ----

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES = re.compile(r"(train|t10k|test)[-_.]images[-_.]idx3[-_.]ubyte(\.gz)?$", re.IGNORECASE)
_MAX_IDX_BYTES = 1 << 34  # a damaged header must not make us allocate terabytes


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (plain or gzip) -> its array, e.g. [N, 28, 28] uint8 images or [N] uint8 labels."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            header = f.read(4)
            if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in _IDX_DTYPES or header[3] == 0:
                raise DataError(f"{path}: not an IDX file (magic {header.hex() or 'empty'})")
            dtype, ndim = _IDX_DTYPES[header[2]], header[3]
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            expected = math.prod(dims) * dtype.itemsize  # Python ints: a damaged header cannot overflow them
            if expected > _MAX_IDX_BYTES:
                raise DataError(f"{path}: its header claims {expected:,} bytes of data")
            if not isinstance(f, gzip.GzipFile) and expected > os.path.getsize(path) - 4 - 4 * ndim:
                raise DataError(
                    f"{path}: truncated ({os.path.getsize(path) - 4 - 4 * ndim:,} of {expected:,} data bytes)"
                )
            data = f.read(expected)
    except (OSError, EOFError, struct.error) as error:
        raise DataError(f"{path}: unreadable IDX file ({error})") from error
    if len(data) < expected:
        raise DataError(f"{path}: truncated ({len(data):,} of {expected:,} data bytes)")
    return np.frombuffer(data, dtype).reshape(dims).copy()  # a writable array: torch.from_numpy wants one


def _is_idx_images(path: Path) -> bool:
    try:
        with _open_maybe_gzip(path) as f:
            header = f.read(4)
    except (OSError, EOFError):
        return False
    return header == b"\0\0\x08\x03"


def _find_idx_images(folder: Path, split: Split) -> Path | None:
    """The split's images file in `folder`, or in raw/ or */raw/ below it (the torchvision layout)."""
    prefixes = ("train",) if split is Split.TRAIN else ("t10k", "test")
    for candidates in (folder.glob("*"), folder.glob("raw/*"), folder.glob("*/raw/*"), folder.glob("*/*")):
        found = sorted(
            p
            for p in candidates
            if p.is_file() and (match := _IDX_IMAGES.search(p.name)) and match.group(1).lower() in prefixes
        )
        if found:
            return min(found, key=lambda p: p.suffix == ".gz")  # the plain file when both are there
    return None


def read_mnist(path: str | os.PathLike, split: Split) -> tuple[np.ndarray, np.ndarray | None]:
    """IDX images file or folder -> (images [N, 1, H, W] uint8, labels [N] int64 if the labels file is beside it)."""
    path = Path(path)
    images_path = _find_idx_images(path, split) if path.is_dir() else path
    if images_path is None:
        raise DataError(f"{path}: no {split.value} images IDX file (such as train-images-idx3-ubyte) in it")
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: expected uint8 images [N, H, W], found {images.dtype} {images.shape}")
    labels = None
    labels_name = re.sub("idx3", "idx1", re.sub("images", "labels", images_path.name, flags=re.I), flags=re.I)
    if labels_name != images_path.name and (images_path.parent / labels_name).is_file():
        try:
            found = read_idx(images_path.parent / labels_name)
            labels = found.astype(np.int64) if found.shape == images.shape[:1] else None
        except DataError:
            labels = None  # labels are a nicety; a damaged labels file does not stop unconditional training
    return images[:, None], labels


# ---- which kind of source ----


def detect_source(source: str) -> SourceKind:
    """What kind of source a DataSpec.source names; DataError if none."""
    if source.lower().startswith("builtin:"):
        if source.lower() == SourceKind.SHAPES.value:
            return SourceKind.SHAPES
        raise DataError(f"unknown built-in dataset {source!r}; available: {SourceKind.SHAPES.value}")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder")
    if path.is_dir():
        if _cifar_batch_dir(path):
            return SourceKind.CIFAR10
        if _find_idx_images(path, Split.TRAIN) or _find_idx_images(path, Split.TEST):
            return SourceKind.IDX
        return SourceKind.FOLDER
    if _is_idx_images(path):
        return SourceKind.IDX
    if path.name in _CIFAR_BATCHES[Split.TRAIN] + _CIFAR_BATCHES[Split.TEST] or tarfile.is_tarfile(path):
        return SourceKind.CIFAR10
    raise DataError(f"{source}: not a folder, a CIFAR-10 .tar.gz or batch, or an IDX images file")


def flips_for(data: str) -> bool:
    """`flips_by_default` of the source a data spec names (False where it names none that exists)."""
    try:
        return flips_by_default(detect_source(parse_data_spec(data).source))
    except (DataError, ValueError, OSError):
        return False
