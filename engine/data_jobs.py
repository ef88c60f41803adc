"""The studio's jobs over data, engine side: inspect and load a dataset (kept in the session for training and the
interpolation's sources), read a split to score, pick images of the loaded dataset. Images leave as uint8 numpy
arrays [N, H, W, C]."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .progress import Progress, Stage
from .worker import JobContext


@dataclass(frozen=True)
class DataPreview:
    spec: str
    report_text: str
    ok: bool
    count: int
    channels: int
    image_size: tuple[int, int]
    memory_bytes: int
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    warnings: tuple[str, ...]
    images: np.ndarray  # [K, H, W, C] uint8: the first images as the model will see them
    ignored: tuple[tuple[str, int], ...] = ()  # (file extension or "hidden folder", count) passed over unread
    error: str | None = None  # why nothing could be loaded ("...: no such file or folder")


def _skipped(report) -> tuple[tuple[str, str], ...]:
    return tuple((s.path, s.reason.value + (f" ({s.detail})" if s.detail else "")) for s in report.skipped)


def dataset_job(spec_text: str, preview: int = 64):
    """Inspect and load a dataset (a blocking one-off job, reporting `Progress` and stoppable between its
    chunks); keeps it in the engine for training and sources."""

    def job(ctx: JobContext) -> DataPreview:
        from .data import DataError, inspect_data, load_dataset, parse_data_spec

        spec = parse_data_spec(spec_text)
        try:
            dataset = load_dataset(spec, progress=ctx.report)
        except DataError:
            report = inspect_data(spec)
            return DataPreview(
                str(spec),
                report.format(),
                False,
                0,
                report.channels,
                spec.image_size,
                0,
                _skipped(report),
                report.warnings,
                np.zeros((0, *spec.image_size, 3), np.uint8),
                tuple(report.ignored.items()),
                report.error or "no usable images",
            )
        ctx.state.dataset = dataset
        report = dataset.report
        shown = torch.stack([dataset[i] for i in range(min(preview, len(dataset)))])  # [K, C, H, W] uint8
        return DataPreview(
            str(spec),
            report.format(),
            report.ok,
            len(dataset),
            dataset.channels,
            dataset.image_size,
            report.memory_bytes,
            _skipped(report),
            report.warnings,
            shown.permute(0, 2, 3, 1).contiguous().numpy(),
            tuple(report.ignored.items()),
        )

    return job


@dataclass(frozen=True)
class HeldOutImages:
    """Images to score, [K, H, W, C] uint8, with what they are in words and why their bound may mislead."""

    images: np.ndarray
    scored: str  # "CIFAR-10 test split", "the folder pets (all of it: a folder has no held-out split)"
    warnings: tuple[str, ...]  # other data than the model's, its own training images, resized, recoloured


def held_out_images_job(spec_text: str, n: int | None = None, trained_on: str | None = None, chunk: int = 256):
    """The first n images (all with None) of a data spec, for evaluating a model trained on the spec `trained_on`
    (None: not recorded): typically the test split. Unlike `dataset_job` it leaves the loaded dataset alone, so
    training and the other panels keep theirs."""

    def job(ctx: JobContext) -> HeldOutImages:
        from .data import DataError, held_out_notes, load_dataset, parse_data_spec

        spec = parse_data_spec(spec_text)
        if n is not None and (spec.count is None or spec.count > n):
            spec = dataclasses.replace(spec, count=n)  # decode no more than needed
        try:
            dataset = load_dataset(spec)
        except DataError as e:
            raise RuntimeError(f"no usable images in {spec}: {str(e).strip()[:300]}") from None
        total = len(dataset) if n is None else min(n, len(dataset))
        parts = []
        for part in dataset.chunks(total, chunk):  # a streamed dataset decodes chunk by chunk: progress, cancellation
            parts.append(part)
            yield Progress(Stage.READING, min(len(parts) * chunk, total), total)
        if not sum(len(part) for part in parts):
            raise RuntimeError(f"no usable images in {spec}")
        notes = held_out_notes(dataset.report, trained_on)
        return HeldOutImages(np.concatenate(parts), notes.scored, notes.warnings)

    return job


def dataset_images_job(indices: Sequence[int]):
    """Images of the loaded dataset, [K, H, W, C] uint8 (interpolation sources, likelihood batches)."""

    def job(ctx: JobContext) -> np.ndarray:
        dataset = ctx.state.dataset
        if dataset is None:
            raise RuntimeError("no dataset is loaded")
        picked = torch.stack([dataset[i % len(dataset)] for i in indices])
        return picked.permute(0, 2, 3, 1).contiguous().numpy()

    return job
