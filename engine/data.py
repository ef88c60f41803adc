"""The training images: where they come from, what was wrong with them, and how they reach the training step.

Sources (a `DataSpec` names one; `parse_data_spec` reads one from text such as "builtin:shapes?size=16"):
  builtin:shapes  our procedural dataset (one filled circle, square or triangle on a plain background), so the studio
                  trains with no download; image i depends only on (seed, split, i)
  a folder        the user's images, searched recursively: PNG, JPEG, WebP, BMP, TIFF, GIF (first frame)
  CIFAR-10        the python version, `cifar-10-batches-py/` or `cifar-10-python.tar.gz`, read by a restricted
                  unpickler that can build numpy arrays and nothing else
  MNIST IDX       MNIST / Fashion-MNIST `*-images-idx3-ubyte[.gz]`: a file, or the folder that holds them

`inspect_data` never raises: it reports what it found, what it skipped and why. `load_dataset` decodes a small dataset
once into a uint8 tensor [N, C, H, W]; a large one stays on disk and a thread pool decodes it ahead of the training
step. `batches` yields [-1, 1] float batches in an order fixed by a seed and resumable at any `BatchPosition`.

Everything here is in this one file because the project's file ownership gave it one file; it splits cleanly along
the section rules below (spec, report, shapes, image files, CIFAR-10, IDX, loading, batches).
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno
import gzip
import importlib
import math
import os
import pickle
import re
import stat
import struct
import tarfile
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from torch import Tensor


class DataError(ValueError):
    """A source that cannot be read at all (missing, wrong format, unsafe); the message says why, for a person."""


class UnsafePickleError(DataError):
    """A CIFAR-10 batch that asks the unpickler for anything but numpy arrays: possibly malicious, never executed."""


# ---- what to load ----

class Split(Enum):
    TRAIN = "train"
    TEST = "test"  # CIFAR-10 test_batch, MNIST t10k-*; builtin:shapes draws it from a separate seed stream


class FitMode(Enum):
    CROP = "crop"  # scale the shorter side to the target, cut out the centre (the paper's CelebA-HQ/LSUN preprocessing)
    PAD = "pad"  # scale the longer side to the target, pad the rest with black (transparent with 4 channels)


class SourceKind(Enum):
    SHAPES = "builtin:shapes"
    FOLDER = "folder"
    CIFAR10 = "cifar10"
    IDX = "idx"


SHAPES_COUNT = {Split.TRAIN: 10_000, Split.TEST: 1_000}  # enough to learn shapes; rendered in a second or two
FEW_IMAGES = 1_000  # below this a diffusion model memorises its data: a warning, never a refusal


@dataclass(frozen=True)
class DataSpec:
    """Which images to train on and the shape every one is brought to."""

    source: str = "builtin:shapes"  # "builtin:shapes", a folder, a CIFAR-10 folder/.tar.gz, an MNIST IDX file/folder
    image_size: tuple[int, int] = (32, 32)  # (height, width) of every training image; non-square is fine
    channels: int | None = None  # None: 1 if every image is grayscale, else 3; 4 keeps alpha (else composited on white)
    fit: FitMode = FitMode.CROP
    split: Split = Split.TRAIN  # CIFAR-10, MNIST and builtin:shapes; a folder is all one split
    count: int | None = None  # builtin:shapes: how many (None: SHAPES_COUNT); other sources: the first `count` images
    seed: int = 0  # builtin:shapes only

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))  # JSON gives lists
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width) with both >= 1, not {self.image_size}")
        if self.channels not in (None, 1, 3, 4):
            raise ValueError(f"channels must be 1, 3, 4 or None (decide from the data), not {self.channels}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1, not {self.count}")

    def __str__(self) -> str:
        """The text `parse_data_spec` reads back: the source, then the options that differ from the defaults."""
        options = []
        if self.image_size != (32, 32):
            height, width = self.image_size
            options.append(f"size={height}" if height == width else f"size={height}x{width}")
        for name in ("channels", "fit", "split", "count", "seed"):
            value = getattr(self, name)
            if value != getattr(_DEFAULT_SPEC, name):
                options.append(f"{name}={value.value if isinstance(value, Enum) else value}")
        return self.source + ("?" + "&".join(options) if options else "")


_DEFAULT_SPEC = DataSpec()


def parse_data_spec(text: str, **overrides: Any) -> DataSpec:
    """"SOURCE" or "SOURCE?key=value&..." -> DataSpec; `overrides` (DataSpec fields) win over the text.

    Keys: size (32, or 24x32 for height x width), channels (1, 3, 4), fit (crop, pad), split (train, test), count, seed.
    """
    source, options = text.strip(), {}
    # A '?' is an option separator unless it belongs to an existing path (legal in Linux file names).
    if "?" in source and not os.path.exists(source):
        source, _, query = source.rpartition("?")
        for item in filter(None, query.split("&")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"option {item!r} in {text!r} is not key=value")
            options[key.strip().lower()] = value.strip()
    fields: dict[str, Any] = {}
    for key, value in options.items():
        if key == "size":
            parts = value.lower().split("x")
            if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
                raise ValueError(f"size={value!r}: give 32 or HEIGHTxWIDTH such as 24x32")
            fields["image_size"] = (int(parts[0]), int(parts[-1]))
        elif key in ("channels", "count", "seed"):
            fields[key] = int(value)
        elif key == "fit":
            fields["fit"] = FitMode(value.lower())
        elif key == "split":
            fields["split"] = Split(value.lower())
        else:
            raise ValueError(f"unknown data option {key!r} in {text!r}; known: size, channels, fit, split, count, seed")
    if not source.lower().startswith("builtin:"):
        source = os.path.expanduser(source)
    return DataSpec(source=source, **{**fields, **overrides})


@dataclass(frozen=True)
class LoadOptions:
    """How to load, as opposed to what (`DataSpec`): none of it changes the images a run trains on."""

    memory_limit_bytes: int = 2 * 1024**3  # decoded uint8 data above this streams from disk (CIFAR-10 train: 154 MB)
    max_pixels: int | None = None  # larger images are skipped as decompression bombs; None: Pillow's MAX_IMAGE_PIXELS
    workers: int = 0  # decoding threads (Pillow releases the GIL while decoding); 0: min(8, CPU count)
    prefetch_batches: int = 4  # streamed batches decoded ahead of the training step

    def pool_size(self) -> int:
        return self.workers or min(8, os.cpu_count() or 1)

    def pixel_limit(self) -> int:
        limit = self.max_pixels if self.max_pixels is not None else Image.MAX_IMAGE_PIXELS
        return limit if limit is not None else 2**62


@dataclass(frozen=True)
class LoadProgress:
    stage: str  # "reading headers", "decoding", "reading CIFAR-10", ...
    done: int
    total: int


ProgressCallback = Callable[[LoadProgress], None]  # may raise to cancel; the exception reaches the caller unchanged


# ---- what the inspector found ----

class SkipReason(Enum):
    EMPTY = "zero bytes"
    NOT_AN_IMAGE = "not an image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    DECOMPRESSION_BOMB = "decompression bomb"
    UNREADABLE = "unreadable"
    NOT_A_FILE = "not a regular file"
    BROKEN_LINK = "broken link"
    SYMLINK_LOOP = "symlink loop"
    DUPLICATE_FOLDER = "folder already searched"


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class DataReport:
    """What a source holds and what was wrong with it; `format()` is the text the CLI prints and the studio shows."""

    spec: DataSpec
    kind: SourceKind | None  # None when the source could not be identified
    count: int  # usable images
    channels: int  # channels of the training tensors, after the override
    source_sizes: Mapping[tuple[int, int], int]  # stored (height, width) -> images
    modes: Mapping[str, int]  # Pillow mode -> images
    formats: Mapping[str, int]  # file format -> images
    skipped: tuple[SkippedFile, ...]
    ignored: Mapping[str, int]  # passed over without an attempt: file extension (or "hidden folder") -> count
    memory_bytes: int  # the decoded uint8 tensor, count * C * H * W
    streamed: bool  # above LoadOptions.memory_limit_bytes: decoded on the fly during training
    verified: bool  # every image was fully decoded, not just its header read
    warnings: tuple[str, ...]
    error: str | None = None  # why nothing can be loaded

    @property
    def ok(self) -> bool:
        return self.error is None and self.count > 0

    def format(self) -> str:
        height, width = self.spec.image_size
        kind = {None: "unknown source", SourceKind.SHAPES: "built-in", SourceKind.FOLDER: "image folder",
                SourceKind.CIFAR10: "CIFAR-10", SourceKind.IDX: "IDX"}[self.kind]
        lines = [f"{self.spec.source} ({kind}, {self.spec.split.value} split)"]
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  {self.count:,} images -> {self.channels} x {height} x {width}, "
                     f"{_human_bytes(self.memory_bytes)} as uint8, "
                     + ("streamed from disk" if self.streamed else "kept in memory")
                     + ("" if self.verified else " (headers read; images not yet decoded)"))
        if self.source_sizes:
            by_area = sorted(self.source_sizes, key=lambda hw: (hw[0] * hw[1], hw))
            common = sorted(self.source_sizes.items(), key=lambda kv: -kv[1])[:3]
            lines.append(f"  stored sizes (HxW): {by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}; "
                         "most common " + ", ".join(f"{h}x{w} ({n:,})" for (h, w), n in common))
        for title, counts in (("modes", self.modes), ("formats", self.formats), ("ignored", self.ignored)):
            if counts:
                ranked = sorted(counts.items(), key=lambda kv: -kv[1])
                lines.append(f"  {title}: " + ", ".join(f"{k} {n:,}" for k, n in ranked))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped):,}:")
            lines += [f"    {s.reason.value}: {s.path}" + (f" ({s.detail})" if s.detail else "")
                      for s in self.skipped[:50]]
            if len(self.skipped) > 50:
                lines.append(f"    ... and {len(self.skipped) - 50:,} more")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---- pixel ranges (Ho et al. 2020, Sec. 3.3: integers 0..255 scaled linearly to [-1, 1]) ----
# These belong with the other tensor <-> uint8 helpers in images.py once it exists; batches() needs them here.

def to_model_range(images: Tensor) -> Tensor:
    """uint8 [...] in 0..255 -> float32 [...] in [-1, 1]."""
    assert images.dtype == torch.uint8, images.dtype
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """float [...] in [-1, 1] -> uint8 [...]: round((x + 1) * 127.5), clamped; inverts to_model_range exactly."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---- builtin:shapes ----

_SUPERSAMPLE = 4  # drawn at 4x and box-filtered down: antialiased edges without Pillow's (absent) antialiased polygons
_SPLIT_STREAM = {Split.TRAIN: 0, Split.TEST: 1}  # separate seed streams, so train and test never share an image


_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, what Pillow's convert("L") uses


def _distinct_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(background, shape) RGB, far apart in RGB and in luma, so the shape stays visible in grayscale too."""
    while True:  # a third of the pairs pass; 16 at a time because one numpy call costs what 16 draws do
        background, colour = np.moveaxis(rng.integers(0, 256, size=(16, 2, 3)), 1, 0)
        difference = colour - background
        good = (np.sqrt((difference**2).sum(1)) >= 150) & (np.abs(difference @ _LUMA) >= 60)
        if good.any():
            k = int(good.argmax())
            return tuple(background[k].tolist()), tuple(colour[k].tolist())


def render_shape(index: int, image_size: tuple[int, int] = (32, 32), split: Split = Split.TRAIN,
                 seed: int = 0) -> np.ndarray:
    """Image `index` of builtin:shapes: [H, W, 3] uint8, a function of (seed, split, index) alone."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index])
    kind = int(rng.integers(3))  # 0 circle, 1 square, 2 triangle
    background, colour = _distinct_colours(rng)
    size_u, x_u, y_u, angle_u = rng.random(4).tolist()
    height, width = image_size
    radius = (0.22 + 0.23 * size_u) * min(height, width)  # circumradius in output pixels
    cx, cy = radius + x_u * (width - 2 * radius), radius + y_u * (height - 2 * radius)  # the whole shape inside
    s = _SUPERSAMPLE
    image = Image.new("RGB", (width * s, height * s), background)
    draw = ImageDraw.Draw(image)
    if kind == 0:
        draw.ellipse([(cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s], fill=colour)
    else:
        corners = 4 if kind == 1 else 3
        theta = [2 * math.pi * (angle_u + k / corners) for k in range(corners)]
        draw.polygon([((cx + radius * math.cos(a)) * s, (cy + radius * math.sin(a)) * s) for a in theta], fill=colour)
    small = image.reduce(s)  # the mean of each s x s block: a box filter, 3x faster than resize(BOX)
    return np.frombuffer(small.tobytes(), np.uint8).reshape(height, width, 3)


def make_shapes(count: int, image_size: tuple[int, int] = (32, 32), split: Split = Split.TRAIN, seed: int = 0,
                start: int = 0) -> Tensor:
    """Images start .. start + count - 1 of builtin:shapes: [count, 3, H, W] uint8."""
    out = np.empty((count, *image_size, 3), dtype=np.uint8)
    for i in range(count):
        out[i] = render_shape(start + i, image_size, split, seed)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ---- image files: finding, probing (header only) and decoding ----

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
                              ".gif"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def find_image_files(root: str | os.PathLike) -> tuple[list[Path], list[SkippedFile], dict[str, int]]:
    """(image files in a stable order, what could not be searched, ignored files by extension) under `root`.

    Follows symlinks, but enters every real folder once: a link back to a folder already searched is how
    os.walk(followlinks=True) loops forever.
    """
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    ignored: collections.Counter[str] = collections.Counter()

    def on_error(error: OSError) -> None:
        skipped.append(SkippedFile(str(error.filename), *_classify(error)))

    root_stat = os.stat(root)
    visited = {(root_stat.st_dev, root_stat.st_ino): os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if name.startswith(".") or name == "__MACOSX":  # .git, .thumbnails, macOS resource forks
                ignored["hidden folder"] += 1
                continue
            try:
                st = os.stat(full)
            except OSError as error:
                skipped.append(SkippedFile(full, *_classify(error)))
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                real = visited[key]
                here = os.path.realpath(dirpath)
                loop = here == real or here.startswith(real.rstrip(os.sep) + os.sep)
                skipped.append(SkippedFile(full, SkipReason.SYMLINK_LOOP if loop else SkipReason.DUPLICATE_FOLDER,
                                           f"leads back to {real}"))
                continue
            visited[key] = os.path.realpath(full)
            kept.append(name)
        dirnames[:] = kept  # os.walk descends only into what is left here
        for name in sorted(filenames):
            extension = os.path.splitext(name)[1].lower()
            if extension not in IMAGE_EXTENSIONS or name.startswith("._"):  # "._x.jpg": macOS metadata, not a JPEG
                ignored[extension or "(no extension)"] += 1
            else:
                files.append(Path(dirpath, name))
    return files, skipped, dict(ignored)


def _classify(error: BaseException) -> tuple[SkipReason, str]:
    """Why a file could not be used, in words; never raises."""
    message = str(error)
    if isinstance(error, Image.DecompressionBombError):
        match = re.search(r"\((\d+) pixels\)", message)
        return SkipReason.DECOMPRESSION_BOMB, (f"{int(match.group(1)):,} pixels" if match else message)
    if isinstance(error, UnidentifiedImageError):
        return SkipReason.NOT_AN_IMAGE, "Pillow recognises no image format in it"
    if isinstance(error, OSError) and error.errno is not None:
        if error.errno == errno.ELOOP:
            return SkipReason.SYMLINK_LOOP, "the link points (through links) at itself"
        if error.errno == errno.ENOENT:
            return SkipReason.BROKEN_LINK, "no such file (a dangling link, or deleted while we read)"
        return SkipReason.UNREADABLE, error.strerror or message
    lowered = message.lower()
    if isinstance(error, EOFError) or "truncated" in lowered or "broken png" in lowered or "premature end" in lowered:
        return SkipReason.TRUNCATED, message or type(error).__name__
    return SkipReason.CORRUPT, f"{type(error).__name__}: {message}"


@dataclass(frozen=True)
class _Probe:
    """What one file's header says."""

    path: Path
    size: tuple[int, int]  # (height, width) as stored
    mode: str
    format: str
    grayscale: bool
    alpha: bool


def _probe_file(path: Path, pixel_limit: int) -> _Probe | SkippedFile:
    """Read one file's header, never its pixels; every failure becomes a SkippedFile."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO named x.png would block Image.open forever
            return SkippedFile(str(path), SkipReason.NOT_A_FILE)
        if st.st_size == 0:
            return SkippedFile(str(path), SkipReason.EMPTY)
        # Pillow warns between 1x and 2x MAX_IMAGE_PIXELS; we refuse those ourselves, below, so the warning is noise.
        # Headers are probed on one thread, where catch_warnings is safe.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                mode, format_ = image.mode, image.format or "?"
                palette_gray, alpha = _palette_facts(image)
    except Exception as error:  # noqa: BLE001 - the inspector reports every failure and goes on
        return SkippedFile(str(path), *_classify(error))
    if width * height > pixel_limit:
        return SkippedFile(str(path), SkipReason.DECOMPRESSION_BOMB,
                           f"{width * height:,} pixels (limit {pixel_limit:,})")
    grayscale = mode in _GRAY_MODES or mode.startswith("I;") or palette_gray
    return _Probe(path, (height, width), mode, format_, grayscale, alpha)


def _palette_facts(image: Image.Image) -> tuple[bool, bool]:
    """(a palette image whose palette is all grays, the image has transparency)."""
    alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
    if image.mode not in ("P", "PA"):
        return False, alpha
    palette = image.getpalette() or []
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb) and (rgb == rgb[:, :1]).all()), alpha


def _to_8bit(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> L, LA, RGB or RGBA, keeping transparency where the file has it."""
    mode = image.mode
    if mode == "PA" or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        return image.convert("RGBA")  # Pillow applies a tRNS/transparency entry only when converting to RGBA
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode == "P":
        gray, _ = _palette_facts(image)
        return image.convert("L" if gray else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode in ("La", "RGBa"):  # premultiplied alpha
        return image.convert(mode.upper())
    if mode in ("I", "F") or mode.startswith("I;"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image)), "L")
    return image.convert("RGB")  # CMYK (Pillow undoes Adobe's inversion), YCbCr, LAB, HSV, RGBX


def _high_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer or float grayscale -> uint8 [H, W].

    The file does not say what range its numbers use, so we infer the usual ones: 0..1 floats, 0..255, 0..65535
    (16-bit PNG/TIFF); larger ones are divided by their maximum, negative ones stretched from minimum to maximum.
    """
    is_float = values.dtype.kind == "f"
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if is_float and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    elif low >= 0 and high <= 65535:
        scaled = values / 257.0  # 65535 -> 255 exactly
    elif low >= 0:
        scaled = values / high * 255.0  # 0 stays black, the brightest value is white
    else:
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _finish(image: Image.Image, size: tuple[int, int], channels: int, fit: FitMode) -> np.ndarray:
    """L/LA/RGB/RGBA image -> [H, W, channels] uint8: alpha onto white (unless kept), channel count, then fit."""
    if image.mode in ("LA", "RGBA") and channels != 4:
        base = Image.new(image.mode[:-1], image.size, "white")
        base.paste(image.convert(image.mode[:-1]), mask=image.getchannel("A"))  # alpha blending onto white
        image = base
    target = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    if image.mode != target:
        image = image.convert(target)
    image = _fit(image, size, fit)
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def _fit(image: Image.Image, size: tuple[int, int], fit: FitMode) -> Image.Image:
    height, width = size
    w, h = image.size
    if (h, w) == (height, width):
        return image
    if fit is FitMode.CROP:
        scale = max(width / w, height / h)
        box_w, box_h = width / scale, height / scale  # the centred source box that maps onto the target
        box = ((w - box_w) / 2, (h - box_h) / 2, (w + box_w) / 2, (h + box_h) / 2)
        # reducing_gap: a fast integer reduction first, then LANCZOS over the last factor of 3 or less
        return image.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    scale = min(width / w, height / h)
    inner_w, inner_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(image.resize((inner_w, inner_h), Image.Resampling.LANCZOS, reducing_gap=3.0),
                 ((width - inner_w) // 2, (height - inner_h) // 2))
    return canvas


def decode_image(path: str | os.PathLike, size: tuple[int, int], channels: int, fit: FitMode) -> np.ndarray:
    """One image file -> [H, W, channels] uint8: first frame, EXIF orientation applied, any Pillow mode.

    Raises on a bad file (truncated, not an image, ...); `_classify` turns the exception into a reason.
    """
    with Image.open(path) as image:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the target: 10-50x faster for photos.
        image.draft(None, (max(size),) * 2)
        image.load()
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except Exception:  # noqa: BLE001 - a broken EXIF block should not cost an otherwise good image
            pass
        return _finish(_to_8bit(image), size, channels, fit)


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
            raise UnsafePickleError(f"refused to unpickle {module}.{name}: a CIFAR-10 batch needs only numpy arrays, "
                                    "so this file is damaged or malicious") from None

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
        raise DataError(f"{name}: b'data' must be a uint8 array [n, 3072], "
                        f"found {getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(v, int) for v in labels):
        raise DataError(f"{name}: b'labels' must be a list of {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)  # rows are R plane, G plane, B plane


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
            with open(folder / name, "rb") as f:
                parts.append(read_cifar10_batch(f, name))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            for name in wanted:
                if name not in members:
                    raise DataError(f"{path}: the archive has no {name}")
                parts.append(read_cifar10_batch(archive.extractfile(members[name]), name))
    else:
        with open(path, "rb") as f:  # a single batch: the split is whatever the file holds
            parts.append(read_cifar10_batch(f, path.name))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---- MNIST / Fashion-MNIST IDX ----

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
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
                raise DataError(f"{path}: truncated ({os.path.getsize(path) - 4 - 4 * ndim:,} of "
                                f"{expected:,} data bytes)")
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
        found = sorted(p for p in candidates if p.is_file() and (match := _IDX_IMAGES.search(p.name))
                       and match.group(1).lower() in prefixes)
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


# ---- sources: image i of a dataset as [H, W, C] uint8, decoded on demand ----

class _Source(Protocol):
    def __len__(self) -> int: ...
    def decode(self, index: int) -> np.ndarray: ...  # [H, W, C] uint8; raises on a bad file
    def name(self, index: int) -> str: ...


@dataclass
class _ShapesSource:
    spec: DataSpec
    count: int
    channels: int

    def __len__(self) -> int:
        return self.count

    def as_tensor(self) -> Tensor | None:
        if self.channels != 3:
            return None
        return make_shapes(self.count, self.spec.image_size, self.spec.split, self.spec.seed)

    def decode(self, index: int) -> np.ndarray:
        rgb = render_shape(index, self.spec.image_size, self.spec.split, self.spec.seed)
        if self.channels == 3:
            return rgb
        return _finish(Image.fromarray(rgb), self.spec.image_size, self.channels, self.spec.fit)

    def name(self, index: int) -> str:
        return f"{self.spec.source}[{index}]"


@dataclass
class _ArraySource:
    images: np.ndarray  # [N, C, h, w] uint8 as stored (CIFAR-10, MNIST)
    spec: DataSpec
    channels: int

    def __len__(self) -> int:
        return len(self.images)

    def as_tensor(self) -> Tensor | None:
        """All images without a copy, when they already have the target shape."""
        if self.images.shape[1:] == (self.channels, *self.spec.image_size):
            return torch.from_numpy(np.ascontiguousarray(self.images))
        return None

    def decode(self, index: int) -> np.ndarray:
        hwc = self.images[index].transpose(1, 2, 0)
        image = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
        return _finish(image, self.spec.image_size, self.channels, self.spec.fit)

    def name(self, index: int) -> str:
        return f"{self.spec.source}[{index}]"


@dataclass
class _FileSource:
    paths: list[Path]
    spec: DataSpec
    channels: int

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, index: int) -> np.ndarray:
        return decode_image(self.paths[index], self.spec.image_size, self.channels, self.spec.fit)

    def name(self, index: int) -> str:
        return str(self.paths[index])


class _CallbackError(Exception):
    """Carries an exception raised by the caller's progress callback through the inspector's catch-all."""


def _report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        try:
            progress(LoadProgress(stage, done, total))
        except Exception as error:
            raise _CallbackError() from error


def _decode_all(source: _Source, keep: bool, options: LoadOptions, progress: ProgressCallback | None,
                ) -> tuple[Tensor | None, list[int], list[SkippedFile]]:
    """Decode every image on a thread pool -> (uint8 [n_good, C, H, W] if keep, good indices, skipped)."""
    n = len(source)
    images: Tensor | None = None
    good: list[int] = []
    skipped: list[SkippedFile] = []

    def attempt(index: int) -> np.ndarray | BaseException:
        try:
            return source.decode(index)
        except Exception as error:  # noqa: BLE001 - reported per file
            return error

    chunk = 256
    with concurrent.futures.ThreadPoolExecutor(options.pool_size()) as pool:
        for start in range(0, n, chunk):  # chunks bound the futures in flight and pace the progress reports
            indices = range(start, min(n, start + chunk))
            for index, result in zip(indices, pool.map(attempt, indices)):
                if isinstance(result, BaseException):
                    skipped.append(SkippedFile(source.name(index), *_classify(result)))
                    continue
                if keep:
                    if images is None:
                        images = torch.empty((n, result.shape[2], *result.shape[:2]), dtype=torch.uint8)
                    images.numpy()[len(good)] = result.transpose(2, 0, 1)  # numpy: results may be read-only
                good.append(index)
            _report(progress, "decoding", min(n, start + chunk), n)
    if images is not None and len(good) < n:
        images = images[: len(good)].clone()  # let go of the rows the skipped files would have used
    return images, good, skipped


# ---- inspecting and loading ----

@dataclass
class _Scan:
    """What a source holds before (or without) decoding every image."""

    kind: SourceKind
    source: _Source
    labels: np.ndarray | None
    channels: int
    sizes: collections.Counter
    modes: collections.Counter
    formats: collections.Counter
    skipped: list[SkippedFile]
    ignored: dict[str, int]
    warnings: list[str]
    verified: bool  # decoding cannot fail (in-memory arrays, rendered shapes)
    probes: list[_Probe] | None = None  # folders: one per image of `source`

    def keep_only(self, good: list[int], failed: list[SkippedFile]) -> None:
        """Drop the folder images that failed to decode, from the source and from the statistics."""
        if not failed or self.probes is None:
            return
        self.probes = [self.probes[i] for i in good]
        self.source = _FileSource([p.path for p in self.probes], self.source.spec, self.channels)
        self.skipped.extend(failed)
        self.sizes, self.modes, self.formats = _probe_counts(self.probes)


def _probe_counts(probes: list[_Probe]) -> tuple[collections.Counter, ...]:
    return (collections.Counter(p.size for p in probes), collections.Counter(p.mode for p in probes),
            collections.Counter(p.format for p in probes))


def _scan(spec: DataSpec, options: LoadOptions, progress: ProgressCallback | None) -> _Scan:
    kind = detect_source(spec.source)
    counter = collections.Counter
    if kind is SourceKind.SHAPES:
        count = spec.count or SHAPES_COUNT[spec.split]
        channels = spec.channels or 3
        return _Scan(kind, _ShapesSource(spec, count, channels), None, channels, counter({spec.image_size: count}),
                     counter({"RGB": count}), counter({"builtin:shapes": count}), [], {}, [], True)
    if kind in (SourceKind.CIFAR10, SourceKind.IDX):
        _report(progress, f"reading {kind.value}", 0, 1)
        images, labels = read_cifar10(spec.source, spec.split) if kind is SourceKind.CIFAR10 else \
            read_mnist(spec.source, spec.split)
        images, labels = images[: spec.count], (labels[: spec.count] if labels is not None else None)
        _report(progress, f"reading {kind.value}", 1, 1)
        native = images.shape[1]
        channels = spec.channels or native
        mode = {1: "L", 3: "RGB"}[native]
        return _Scan(kind, _ArraySource(images, spec, channels), labels, channels,
                     counter({tuple(images.shape[2:]): len(images)}), counter({mode: len(images)}),
                     counter({kind.value: len(images)}), [], {}, [], True)
    files, skipped, ignored = find_image_files(spec.source)
    probes: list[_Probe] = []
    for i, path in enumerate(files):
        probe = _probe_file(path, options.pixel_limit())
        (probes if isinstance(probe, _Probe) else skipped).append(probe)
        if i % 256 == 255 or i == len(files) - 1:
            _report(progress, "reading headers", i + 1, len(files))
    probes = probes[: spec.count]
    all_gray = bool(probes) and all(p.grayscale for p in probes)
    channels = spec.channels or (1 if all_gray else 3)
    notes = []
    if channels == 1 and not all_gray:
        notes.append(f"{sum(not p.grayscale for p in probes):,} colour images will be converted to grayscale")
    if channels == 4 and not any(p.alpha for p in probes):
        notes.append("4 channels asked for, but no image has transparency: alpha will be 255 everywhere")
    height, width = spec.image_size
    small = sum(1 for p in probes if p.size[0] < height or p.size[1] < width)
    if small:
        notes.append(f"{small:,} images are smaller than {height}x{width} and will be upscaled (blurred)")
    return _Scan(kind, _FileSource([p.path for p in probes], spec, channels), None, channels, *_probe_counts(probes),
                 skipped, ignored, notes, verified=False, probes=probes)


def _make_report(spec: DataSpec, scan: _Scan, options: LoadOptions, verified: bool) -> DataReport:
    count = len(scan.source)
    memory = count * scan.channels * spec.image_size[0] * spec.image_size[1]
    notes = list(scan.warnings)
    streamed = memory > options.memory_limit_bytes
    if streamed:
        notes.append(f"{_human_bytes(memory)} decoded is above the {_human_bytes(options.memory_limit_bytes)} "
                     "memory limit: images will be decoded from disk during training")
    if 0 < count < FEW_IMAGES:
        notes.append(f"only {count:,} images: a diffusion model memorises a dataset this small and will mostly "
                     "reproduce its training images")
    if scan.skipped:
        notes.append(f"{len(scan.skipped):,} files skipped (listed above)")
    return DataReport(spec, scan.kind, count, scan.channels, dict(scan.sizes), dict(scan.modes), dict(scan.formats),
                      tuple(scan.skipped), dict(scan.ignored), memory, streamed, verified or scan.verified,
                      tuple(notes), None if count else "no usable images")


def inspect_data(spec: DataSpec | str, verify: bool = True, options: LoadOptions = LoadOptions(),
                 progress: ProgressCallback | None = None) -> DataReport:
    """Everything about a source a person should know before training on it. Never raises (except from `progress`).

    verify: decode every image (finds truncated and corrupt files) rather than reading headers only.
    """
    if isinstance(spec, str):
        try:
            spec = parse_data_spec(spec)
        except ValueError as error:
            return _failed_report(DataSpec(source=spec), None, str(error))
    try:
        scan = _scan(spec, options, progress)
        if verify and not scan.verified:
            _, good, skipped = _decode_all(scan.source, keep=False, options=options, progress=progress)
            scan.keep_only(good, skipped)
        return _make_report(spec, scan, options, verified=verify)
    except _CallbackError as error:
        raise error.__cause__ from None
    except DataError as error:
        return _failed_report(spec, _kind_or_none(spec), str(error))
    except Exception as error:  # noqa: BLE001 - the inspector's promise: a report, not a traceback
        return _failed_report(spec, _kind_or_none(spec), f"{type(error).__name__}: {error}")


def _kind_or_none(spec: DataSpec) -> SourceKind | None:
    try:
        return detect_source(spec.source)
    except Exception:  # noqa: BLE001
        return None


def _failed_report(spec: DataSpec, kind: SourceKind | None, error: str) -> DataReport:
    return DataReport(spec, kind, 0, spec.channels or 3, {}, {}, {}, (), {}, 0, False, False, (), error)


class ImageDataset:
    """The training images of one DataSpec as uint8 [C, H, W] each: decoded in memory, or from disk on demand."""

    def __init__(self, report: DataReport, images: Tensor | None = None, source: _Source | None = None,
                 labels: Tensor | None = None, options: LoadOptions = LoadOptions()):
        assert (images is None) != (source is None), "an ImageDataset holds either images or a source to decode"
        self.report = report
        self.spec = report.spec
        self.labels = labels  # [N] int64 class labels where the format has them (CIFAR-10, MNIST), else None
        self._images = images
        self._source = source
        self._options = options
        self._stream_skipped: dict[str, SkippedFile] = {}
        assert images is None or (images.dtype == torch.uint8 and images.shape[1:] == (self.channels, *self.image_size))

    @classmethod
    def from_images(cls, images: Tensor, spec: DataSpec | None = None) -> ImageDataset:
        """A dataset around images already in memory, uint8 [N, C, H, W] (a notebook's tensor, a test's)."""
        assert images.dtype == torch.uint8 and images.ndim == 4, (images.dtype, images.shape)
        n, channels, height, width = images.shape
        spec = spec or DataSpec(source="tensor", image_size=(height, width), channels=channels)
        report = DataReport(spec, None, n, channels, {(height, width): n}, {}, {}, (), {}, images.numel(),
                            streamed=False, verified=True, warnings=())
        return cls(report, images=images)

    @property
    def channels(self) -> int:
        return self.report.channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.spec.image_size

    @property
    def in_memory(self) -> bool:
        return self._images is not None

    @property
    def images(self) -> Tensor:
        """All images, uint8 [N, C, H, W]; only for a dataset held in memory."""
        if self._images is None:
            raise RuntimeError("this dataset is streamed from disk; read it with batches() or read()")
        return self._images

    @property
    def stream_skipped(self) -> tuple[SkippedFile, ...]:
        """Files that failed while streaming (they passed the header check but not the decode); dropped from batches."""
        return tuple(self._stream_skipped.values())

    def __len__(self) -> int:
        return len(self._images) if self._images is not None else len(self._source)

    def __getitem__(self, index: int) -> Tensor:
        """uint8 [C, H, W]."""
        images, kept = self.read(torch.tensor([index]))
        if not kept[0]:
            failure = self._stream_skipped[self._source.name(index)]
            raise DataError(f"{failure.path}: {failure.reason.value} ({failure.detail})")
        return images[0]

    def read(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """indices [B] -> (uint8 [B', C, H, W], kept [B] bool); B' < B only where streamed files fail to decode."""
        stream = self.read_ahead(iter([indices]), depth=1)
        try:
            return next(stream)
        finally:
            stream.close()  # shuts the decoding threads down now

    def read_ahead(self, index_batches: Iterator[Tensor], depth: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """`read` for each batch of indices, decoding up to `depth` batches ahead on a thread pool when streamed."""
        if self._images is not None:
            for indices in index_batches:
                yield self._images[indices], torch.ones(len(indices), dtype=torch.bool)
            return
        depth = depth or self._options.prefetch_batches
        pool = concurrent.futures.ThreadPoolExecutor(self._options.pool_size())
        pending: collections.deque[tuple[Tensor, list[concurrent.futures.Future]]] = collections.deque()
        try:
            while True:
                while len(pending) < depth:
                    indices = next(index_batches, None)
                    if indices is None:
                        break
                    pending.append((indices, [pool.submit(self._source.decode, int(i)) for i in indices]))
                if not pending:
                    return
                indices, futures = pending.popleft()
                yield self._collect(indices, futures)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, indices: Tensor, futures: list[concurrent.futures.Future]) -> tuple[Tensor, Tensor]:
        arrays, kept = [], torch.zeros(len(indices), dtype=torch.bool)
        for k, (index, future) in enumerate(zip(indices.tolist(), futures)):
            error = future.exception()
            if error is None:
                arrays.append(future.result())
                kept[k] = True
            else:
                name = self._source.name(index)
                self._stream_skipped.setdefault(name, SkippedFile(name, *_classify(error)))
        empty = torch.empty((0, self.channels, *self.image_size), dtype=torch.uint8)
        return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() if arrays else empty), kept


def load_dataset(spec: DataSpec | str, progress: ProgressCallback | None = None,
                 options: LoadOptions = LoadOptions()) -> ImageDataset:
    """The dataset, decoded into memory when it fits under options.memory_limit_bytes, else streamed.

    Raises DataError (with the inspector's text) when nothing usable is found.
    """
    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    try:
        scan = _scan(spec, options, progress)
        report = _make_report(spec, scan, options, verified=False)
        labels = torch.from_numpy(scan.labels) if scan.labels is not None else None
        if report.streamed or not report.count:
            if not report.count:
                raise DataError(report.format())
            return ImageDataset(report, source=scan.source, labels=labels, options=options)
        images = scan.source.as_tensor() if isinstance(scan.source, (_ArraySource, _ShapesSource)) else None
        if images is None:
            images, good, skipped = _decode_all(scan.source, keep=True, options=options, progress=progress)
            scan.keep_only(good, skipped)
            labels = labels[good] if labels is not None and skipped else labels
            report = _make_report(spec, scan, options, verified=True)
            if images is None:
                raise DataError(report.format())
        return ImageDataset(report, images=images, labels=labels, options=options)
    except _CallbackError as error:
        raise error.__cause__ from None


# ---- batches: shuffled per epoch, flipped, exactly resumable ----

@dataclass(frozen=True)
class BatchPosition:
    """Where a batch stream stands: `index` images of epoch `epoch`'s shuffled order have been yielded."""

    epoch: int = 0
    index: int = 0


class BatchIterator:
    """An endless stream of [B, C, H, W] float batches in [-1, 1]; `position` is where the next batch starts.

    The images form one long sequence, epoch after epoch, each epoch a fresh permutation; batch k is images
    k*B .. k*B+B-1 of that sequence, so a batch may straddle two epochs and no image is ever dropped. Epoch e's
    permutation and flips come from a generator seeded by (base seed, e) alone, so any position can be reached
    without replaying the ones before it: store `position` in the checkpoint and pass it back as `start`.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, generator: torch.Generator, hflip: bool,
                 start: BatchPosition = BatchPosition(), device: torch.device | str | None = None):
        if len(dataset) == 0:
            raise DataError("the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 <= start.index <= len(dataset) or start.epoch < 0:
            raise ValueError(f"{start} is outside a dataset of {len(dataset)} images")
        self.dataset, self.batch_size, self.hflip, self.device = dataset, batch_size, hflip, device
        # One draw: the same generator state at the start of a run gives the same stream, and so the same resume.
        self.base_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        self.position = self._normalised(start)
        self._pending: collections.deque[tuple[Tensor, BatchPosition]] = collections.deque()
        self._stream: Iterator[Tensor] | None = None
        self._order_cache: tuple[int, Tensor, Tensor] | None = None

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Tensor:
        if self._stream is None:
            self._stream = self._batches()
        return next(self._stream)

    def close(self) -> None:
        """Stop the decoding threads of a streamed dataset now rather than at garbage collection."""
        if self._stream is not None:
            self._stream.close()

    def epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(permutation [N] int64, flip [N] bool) of one epoch: position p shows image perm[p], mirrored if flip[p]."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            seed = int(np.random.SeedSequence([self.base_seed, epoch]).generate_state(1, np.uint64)[0])
            generator = torch.Generator().manual_seed(seed)
            n = len(self.dataset)
            perm = torch.randperm(n, generator=generator)
            flip = torch.rand(n, generator=generator) < 0.5
            self._order_cache = (epoch, perm, flip if self.hflip else torch.zeros(n, dtype=torch.bool))
        return self._order_cache[1], self._order_cache[2]

    def _normalised(self, position: BatchPosition) -> BatchPosition:
        return BatchPosition(position.epoch + 1, 0) if position.index == len(self.dataset) else position

    def _index_batches(self) -> Iterator[Tensor]:
        epoch, index = self.position.epoch, self.position.index
        n = len(self.dataset)
        while True:
            parts, flips, need = [], [], self.batch_size
            while need:
                perm, flip = self.epoch_order(epoch)
                take = min(need, n - index)
                parts.append(perm[index:index + take])
                flips.append(flip[index:index + take])
                index, need = index + take, need - take
                if index == n:
                    epoch, index = epoch + 1, 0
            self._pending.append((torch.cat(flips), BatchPosition(epoch, index)))
            yield torch.cat(parts)

    def _batches(self) -> Iterator[Tensor]:
        for images, kept in self.dataset.read_ahead(self._index_batches()):
            flip, end = self._pending.popleft()  # read_ahead keeps batch order, so the queues stay in step
            self.position = end
            if len(images) == 0:
                continue  # every file of this batch failed to decode (streamed folders only)
            x = images.to(self.device, non_blocking=True) if self.device is not None else images
            mirror = flip[kept].to(x.device).view(-1, 1, 1, 1)
            yield to_model_range(torch.where(mirror, x.flip(-1), x))  # [B, C, H, W] in [-1, 1]


def batches(dataset: ImageDataset, batch_size: int, generator: torch.Generator, hflip: bool = True,
            start: BatchPosition = BatchPosition(), device: torch.device | str | None = None) -> BatchIterator:
    """Training batches, [batch_size, C, H, W] float32 in [-1, 1]; random horizontal flips as in the paper's CIFAR-10.

    Draws one number from `generator`; to resume, pass a generator in the same state (seeded with the run's seed)
    and the checkpoint's `BatchIterator.position` as `start`.
    """
    return BatchIterator(dataset, batch_size, generator, hflip, start, device)
