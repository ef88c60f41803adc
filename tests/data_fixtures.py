"""Files that exercise engine/data/: broken images, a crafted decompression bomb, CIFAR-10 batches as Python 2
wrote them, malicious pickles and IDX files. Each helper writes one file and allocates nothing large.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# ---- images ----


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A 60-byte PNG whose IHDR claims width x height 1-bit pixels: a decoder that trusts it allocates them all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale, no interlace
    idat = zlib.compress(b"\0" * 16)  # a few rows' worth; never reached by a careful reader
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def write_truncated_png(path: Path, size: int = 24) -> Path:
    """A noisy PNG (so its IDAT is long) cut off halfway: the header parses, the pixels do not."""
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_exif_rotated_jpeg(path: Path) -> Path:
    """20 wide x 10 high, left half red, right half blue, EXIF orientation 6 (display rotated 90 degrees clockwise):
    shown upright it is 10 wide x 20 high, red on top."""
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif)
    return path


# ---- CIFAR-10 batches ----


def _py2_string(value: bytes) -> bytes:
    # Python 2's cPickle wrote str as SHORT_BINSTRING / BINSTRING; Python 3 can no longer produce these.
    return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<I", len(value)) + value


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The opcodes of a CIFAR-10 batch as the original (Python 2, numpy 1.x, protocol 2) files hold them."""
    assert data.dtype == np.uint8 and data.ndim == 2
    rows, cols = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"
        + _py2_string(b"b")
        + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
        + b"("
        + _py2_int(1)
        + _py2_int(rows)
        + _py2_int(cols)
        + b"\x86"  # state: version, shape,
        + b"cnumpy\ndtype\n"
        + _py2_string(b"u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R"  # dtype('u1', 0, 1)
        + b"("
        + _py2_int(3)
        + _py2_string(b"|")
        + b"NNN"
        + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff"
        + _py2_int(0)
        + b"tb"  # the dtype's own state
        + b"\x89"
        + _py2_string(data.tobytes())
        + b"tb"
    )  # fortran order False, the raw bytes
    items = (
        _py2_string(b"batch_label")
        + _py2_string(b"training batch 1 of 5")
        + _py2_string(b"labels")
        + b"]("
        + b"".join(_py2_int(v) for v in labels)
        + b"e"
        + _py2_string(b"data")
        + array
        + _py2_string(b"filenames")
        + b"]("
        + b"".join(_py2_string(b"img_%d.png" % i) for i in range(rows))
        + b"e"
    )
    return b"\x80\x02}(" + items + b"u."


def py3_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The same batch pickled by today's Python and numpy, protocol 2 like the original."""
    return pickle.dumps(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": labels,
            b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
        },
        protocol=2,
    )


def random_cifar_data(rows: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (rows, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, rows)]


def write_cifar_folder(folder: Path, rows: int = 4, py2: bool = True) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py/ with data_batch_1..5 and test_batch of `rows` images each; returns what each holds."""
    batches_dir = folder / "cifar-10-batches-py"
    batches_dir.mkdir(parents=True)
    contents = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        contents[name] = random_cifar_data(rows, seed=k)
        (batches_dir / name).write_bytes((py2_cifar_batch if py2 else py3_cifar_batch)(*contents[name]))
    (batches_dir / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return contents


def write_cifar_tar(path: Path, folder: Path) -> Path:
    """cifar-10-python.tar.gz holding `folder`/cifar-10-batches-py as the download does."""
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


class _RunsShell:
    """Unpickling this runs os.system(command): what a malicious 'CIFAR-10 batch' would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_pickle(command: str) -> bytes:
    return pickle.dumps({b"data": _RunsShell(command), b"labels": [0]}, protocol=2)


def object_array_pickle() -> bytes:
    """A 'CIFAR-10 batch' whose data is a numpy object array: numpy globals only, but objects inside."""
    data = np.empty((1, 3072), dtype=object)
    return pickle.dumps({b"data": data, b"labels": [0]}, protocol=2)


# ---- IDX ----


def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    return b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
