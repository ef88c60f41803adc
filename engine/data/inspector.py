"""The inspector: what a source holds (`_scan`: headers only for folders), and `inspect_data`, which reports it,
what it skipped and why, and never raises.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from .files import _Probe, _probe_file, find_image_files
from .formats import detect_source, read_cifar10, read_mnist
from .report import DataReport, SkippedFile, human_bytes
from .shapes import SHAPES_COUNT
from .sources import _ArraySource, _CallbackError, _decode_all, _FileSource, _report, _ShapesSource, _Source
from .spec import DataError, DataSpec, LoadOptions, ProgressCallback, SourceKind, parse_data_spec

FEW_IMAGES = 1_000  # below this a diffusion model memorises its data: a warning, never a refusal


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
    return (
        collections.Counter(p.size for p in probes),
        collections.Counter(p.mode for p in probes),
        collections.Counter(p.format for p in probes),
    )


def _scan(spec: DataSpec, options: LoadOptions, progress: ProgressCallback | None) -> _Scan:
    kind = detect_source(spec.source)
    counter = collections.Counter
    if kind is SourceKind.SHAPES:
        count = spec.count or SHAPES_COUNT[spec.split]
        channels = spec.channels or 3
        return _Scan(
            kind,
            _ShapesSource(spec, count, channels),
            None,
            channels,
            counter({spec.image_size: count}),
            counter({"RGB": count}),
            counter({"builtin:shapes": count}),
            [],
            {},
            [],
            True,
        )
    if kind in (SourceKind.CIFAR10, SourceKind.IDX):
        _report(progress, f"reading {kind.value}", 0, 1)
        images, labels = (
            read_cifar10(spec.source, spec.split) if kind is SourceKind.CIFAR10 else read_mnist(spec.source, spec.split)
        )
        images, labels = images[: spec.count], (labels[: spec.count] if labels is not None else None)
        _report(progress, f"reading {kind.value}", 1, 1)
        native = images.shape[1]
        channels = spec.channels or native
        mode = {1: "L", 3: "RGB"}[native]
        return _Scan(
            kind,
            _ArraySource(images, spec, channels),
            labels,
            channels,
            counter({tuple(images.shape[2:]): len(images)}),
            counter({mode: len(images)}),
            counter({kind.value: len(images)}),
            [],
            {},
            [],
            True,
        )
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
    return _Scan(
        kind,
        _FileSource([p.path for p in probes], spec, channels),
        None,
        channels,
        *_probe_counts(probes),
        skipped,
        ignored,
        notes,
        verified=False,
        probes=probes,
    )


def _make_report(spec: DataSpec, scan: _Scan, options: LoadOptions, verified: bool) -> DataReport:
    count = len(scan.source)
    memory = count * scan.channels * spec.image_size[0] * spec.image_size[1]
    notes = list(scan.warnings)
    streamed = memory > options.memory_limit_bytes
    if streamed:
        notes.append(
            f"{human_bytes(memory)} decoded is above the {human_bytes(options.memory_limit_bytes)} "
            "memory limit: images will be decoded from disk during training"
        )
    if 0 < count < FEW_IMAGES:
        notes.append(
            f"only {count:,} images: a diffusion model memorises a dataset this small and will mostly "
            "reproduce its training images"
        )
    if scan.skipped:
        notes.append(f"{len(scan.skipped):,} files skipped (listed above)")
    return DataReport(
        spec,
        scan.kind,
        count,
        scan.channels,
        dict(scan.sizes),
        dict(scan.modes),
        dict(scan.formats),
        tuple(scan.skipped),
        dict(scan.ignored),
        memory,
        streamed,
        verified or scan.verified,
        tuple(notes),
        None if count else "no usable images",
    )


def inspect_data(
    spec: DataSpec | str,
    verify: bool = True,
    options: LoadOptions = LoadOptions(),
    progress: ProgressCallback | None = None,
) -> DataReport:
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
