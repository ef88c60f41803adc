"""Image files: finding them in a folder tree (`find_image_files`), reading one header without its pixels
(`_probe_file`) and decoding one into [H, W, C] uint8 at the training size (`decode_image`), from any Pillow mode.

Searched recursively: PNG, JPEG, WebP, BMP, TIFF, GIF (first frame). Every failure becomes a `SkippedFile`.
"""

from __future__ import annotations

import collections
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .report import SkippedFile, SkipReason, _classify
from .spec import FitMode

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)
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
                skipped.append(
                    SkippedFile(
                        full, SkipReason.SYMLINK_LOOP if loop else SkipReason.DUPLICATE_FOLDER, f"leads back to {real}"
                    )
                )
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
        return SkippedFile(
            str(path), SkipReason.DECOMPRESSION_BOMB, f"{width * height:,} pixels (limit {pixel_limit:,})"
        )
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
    canvas.paste(
        image.resize((inner_w, inner_h), Image.Resampling.LANCZOS, reducing_gap=3.0),
        ((width - inner_w) // 2, (height - inner_h) // 2),
    )
    return canvas


def fit_array(array: np.ndarray, size: tuple[int, int], channels: int, fit: FitMode = FitMode.CROP) -> np.ndarray:
    """A decoded image [H, W, C] uint8 (C = 1, 3 or 4) -> [height, width, channels] uint8 at `size`, brought there
    exactly as `decode_image` brings a file: a dataset image of another shape than the model's, say."""
    assert array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (1, 3, 4), (array.shape, array.dtype)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return _finish(Image.fromarray(array[:, :, 0] if mode == "L" else array, mode), size, channels, fit)


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
