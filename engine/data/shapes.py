"""builtin:shapes, our procedural dataset: one filled circle, square or triangle on a plain background, so the studio
trains with no download. Image i depends only on (seed, split, i), so any image can be rendered alone and in any order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .spec import Split

SHAPES_COUNT = {Split.TRAIN: 10_000, Split.TEST: 1_000}  # enough to learn shapes; rendered in a second or two
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


def render_shape(
    index: int, image_size: tuple[int, int] = (32, 32), split: Split = Split.TRAIN, seed: int = 0
) -> np.ndarray:
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


def make_shapes(
    count: int, image_size: tuple[int, int] = (32, 32), split: Split = Split.TRAIN, seed: int = 0, start: int = 0
) -> Tensor:
    """Images start .. start + count - 1 of builtin:shapes: [count, 3, H, W] uint8."""
    out = np.empty((count, *image_size, 3), dtype=np.uint8)
    for i in range(count):
        out[i] = render_shape(start + i, image_size, split, seed)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
