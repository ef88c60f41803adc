"""The training images of one spec: `load_dataset` decodes a small dataset once into a uint8 tensor [N, C, H, W]; a
large one stays on disk and `ImageDataset.read_ahead` decodes it on a thread pool ahead of the training step.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from .inspector import _make_report, _scan
from .report import DataReport, SkippedFile, _classify
from .sources import _ArraySource, _CallbackError, _decode_all, _ShapesSource, _Source
from .spec import DataError, DataSpec, LoadOptions, ProgressCallback, parse_data_spec


class ImageDataset:
    """The training images of one DataSpec as uint8 [C, H, W] each: decoded in memory, or from disk on demand."""

    def __init__(
        self,
        report: DataReport,
        images: Tensor | None = None,
        source: _Source | None = None,
        labels: Tensor | None = None,
        options: LoadOptions = LoadOptions(),
    ):
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
        report = DataReport(
            spec,
            None,
            n,
            channels,
            {(height, width): n},
            {},
            {},
            (),
            {},
            images.numel(),
            streamed=False,
            verified=True,
            warnings=(),
        )
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

    def chunks(self, count: int, chunk: int = 256) -> Iterator[np.ndarray]:
        """The first `count` images as [B, H, W, C] uint8 numpy chunks of up to `chunk` (fewer where streamed files
        fail to decode): how images to score or show are read, with a point between chunks to report or stop."""
        for start in range(0, min(count, len(self)), chunk):
            images, _ = self.read(torch.arange(start, min(start + chunk, count, len(self))))
            yield images.permute(0, 2, 3, 1).contiguous().numpy()

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


def load_dataset(
    spec: DataSpec | str, progress: ProgressCallback | None = None, options: LoadOptions = LoadOptions()
) -> ImageDataset:
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
