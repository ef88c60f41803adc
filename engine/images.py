"""Tensors to pictures and back: uint8 conversion, grids, PNGs that carry their provenance, strips and GIFs.

Images cross from the engine to anything else (the studio, files) as uint8 numpy arrays [N, H, W, C]; a single
picture is [H, W, C]. PNG text chunks hold the provenance (run, step, EMA or raw, sampler, steps, seed, config) so
any exported picture can be regenerated; `read_png_metadata` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from torch import Tensor

from .atomic import atomic_write


def to_uint8(x: Tensor) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] -> [N, H, W, C] uint8 (round((x + 1) * 127.5), clamped)."""
    assert x.ndim == 4, x.shape
    scaled = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(scaled.permute(0, 2, 3, 1).cpu().numpy())


def from_uint8(images: np.ndarray | Tensor) -> Tensor:
    """[N, H, W, C] uint8 -> [N, C, H, W] float32 in [-1, 1], on the 256-level grid of Eq. 13."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # a decoded image is read-only: torch would warn (and the result is a new tensor anyway)
    t = torch.as_tensor(np.asarray(images))
    assert t.dtype == torch.uint8 and t.ndim == 4, (t.dtype, t.shape)
    return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def grid_shape(n: int, height: int, width: int, nrow: int | None = None, padding: int = 2) -> tuple[int, int, int]:
    """(columns, picture height, picture width) of `make_grid` of n images of height x width: `nrow` images per
    row (None: as square as possible), `padding` pixels around every image."""
    columns = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / columns))
    return columns, rows * (height + padding) + padding, columns * (width + padding) + padding


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """[N, H, W, C] uint8 -> one [H', W', C] picture, `nrow` images per row (default: as square as possible)."""
    assert images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
    n, h, w, c = images.shape
    ncol, height, width = grid_shape(n, h, w, nrow, padding)
    grid = np.full((height, width, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def upscale(picture: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour integer zoom of [H, W, C] (a 32x32 sample is unreadable at 1:1)."""
    if factor <= 1:
        return picture
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def _pil(picture: np.ndarray) -> Image.Image:
    assert picture.ndim == 3 and picture.dtype == np.uint8, (picture.shape, picture.dtype)
    channels = picture.shape[2]
    if channels == 1:
        return Image.fromarray(picture[:, :, 0], mode="L")
    return Image.fromarray(np.ascontiguousarray(picture), mode={3: "RGB", 4: "RGBA"}[channels])


def save_png(path: str | Path, picture: np.ndarray, metadata: dict[str, Any] | None = None) -> Path:
    """Save [H, W, C] uint8 as PNG; each metadata value goes into a text chunk (non-strings as JSON)."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_itxt(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    image = _pil(picture)
    atomic_write(path, lambda f: image.save(f, format="PNG", pnginfo=info))
    return path


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG written by `save_png` (values as stored: JSON where they were not strings)."""
    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}))


def strip(frames: Sequence[np.ndarray], padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Frames [H, W, C] side by side, left to right (the trajectory as a strip, Fig. 6)."""
    return make_grid(np.stack(frames), nrow=len(frames), padding=padding, pad_value=pad_value)


def captioned(picture: np.ndarray, text: str, pad_value: int = 255) -> np.ndarray:
    """[H, W, C] uint8 with a band above it holding `text` (Pillow's built-in font, black on `pad_value`), so that a
    caption never covers the picture: a GIF frame's "t = 500"."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    left, top, right, bottom = font.getbbox(text)
    band = np.full((bottom + 4, picture.shape[1], picture.shape[2]), pad_value, np.uint8)
    canvas = _pil(np.concatenate([band, picture]))
    ink = (0, 0, 0, 255)[: picture.shape[2]] if picture.shape[2] == 4 else (0,) * picture.shape[2]  # opaque black
    ImageDraw.Draw(canvas).text((2 - left, 2 - top + 1), text, fill=ink, font=font)
    out = np.asarray(canvas)
    return out[:, :, None] if out.ndim == 2 else out


def save_gif(path: str | Path, frames: Sequence[np.ndarray], duration_ms: int = 40, hold_last_ms: int = 1000) -> Path:
    """An animated GIF of [H, W, C] uint8 frames that loops, holding the last frame a little longer."""
    path = Path(path)
    images = [_pil(frame).convert("RGB") if frame.shape[2] == 4 else _pil(frame) for frame in frames]
    durations = [duration_ms] * (len(images) - 1) + [hold_last_ms]
    atomic_write(
        path,
        lambda f: images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,
            optimize=False,
            disposal=1,
        ),
    )
    return path
