"""Sources: image i of a dataset as [H, W, C] uint8, decoded on demand, whatever it is stored as (rendered shapes,
an in-memory array, image files); `_decode_all` decodes every one on a thread pool, reporting progress.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..progress import Progress
from .files import _finish, decode_image
from .report import SkippedFile, _classify
from .shapes import make_shapes, render_shape
from .spec import DataSpec, LoadOptions, ProgressCallback


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
            progress(Progress(stage, done, total))
        except Exception as error:
            raise _CallbackError() from error


def _decode_all(
    source: _Source,
    keep: bool,
    options: LoadOptions,
    progress: ProgressCallback | None,
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
