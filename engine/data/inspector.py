"""The inspector: what a source holds (`_scan`: headers only for folders), and `inspect_data`, which reports it,
what it skipped and why, and never raises.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import _Probe, _probe_file, find_image_files
from .formats import detect_source, read_cifar10, read_mnist
from .report import DataReport, SkippedFile, human_bytes
from .shapes import SHAPES_COUNT
from .sources import _ArraySource, _CallbackError, _decode_all, _FileSource, _report, _ShapesSource, _Source
from .spec import DataError, DataSpec, LoadOptions, ProgressCallback, SourceKind, Split, parse_data_spec

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # Pillow modes with one colour channel
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


@dataclass(frozen=True)
class HeldOutNotes:
    """What a likelihood figure was computed on, in words, and why it may not compare with the model's own."""

    scored: str  # "CIFAR-10 test split", "the folder pets (all of it: a folder has no held-out split)"
    warnings: tuple[str, ...]


def held_out_notes(report: DataReport, trained_on: str | None) -> HeldOutNotes:
    """Describe the images `report` read for scoring a model that works at report.spec's size and channels and
    was trained on the data spec `trained_on` (None: not recorded, as for an imported model), and warn where the
    bound is not what it seems: other data than the model's, its own training images, resized or recoloured."""
    spec, warnings = report.spec, []
    name = spec.source if report.kind is SourceKind.SHAPES else (Path(spec.source).name or spec.source)
    folder = report.kind is SourceKind.FOLDER
    if folder:
        scored = f"the folder {name} (all of it: a folder has no held-out split)"
    else:
        label = {SourceKind.CIFAR10: "CIFAR-10", SourceKind.IDX: name}.get(report.kind, name)
        scored = f"{label} {spec.split.value} split"
    if trained_on is None:
        warnings.append(
            "the model's training data is not recorded (an imported model): the figure compares with "
            "its paper's only on the data it was trained on"
        )
    else:
        trained = parse_data_spec(trained_on)
        if not _same_source(trained.source, spec.source, report.kind) or trained.seed != spec.seed:
            warnings.append(
                f"the model was trained on {trained_on}, not on these images: the figure says how it "
                "models other data, not how well it learned its own"
            )
        elif folder or spec.split is Split.TRAIN:
            warnings.append(
                "these are the images the model was trained on"
                + (" (a folder has no held-out split)" if folder else " (its train split)")
                + ": a training-set figure, lower than a held-out one would be"
            )
    height, width = spec.image_size
    other = {size: n for size, n in report.source_sizes.items() if tuple(size) != (height, width)}
    if other:
        (h, w), _ = max(other.items(), key=lambda kv: kv[1])
        warnings.append(
            f"{sum(other.values()):,} of {report.count:,} images are stored at another size than the "
            f"model's {height}x{width} (most often {h}x{w}): the figure is of the resized images"
        )
    gray = sum(n for mode, n in report.modes.items() if mode in GRAYSCALE_MODES)
    if report.channels == 1 and gray < report.count:
        warnings.append(f"{report.count - gray:,} colour images were converted to grayscale for this 1-channel model")
    elif report.channels > 1 and report.count and gray == report.count:
        warnings.append(
            f"the images are grayscale and the model works in colour: each is scored as "
            f"{report.channels} equal channels"
        )
    return HeldOutNotes(scored, tuple(warnings))


def _same_source(trained: str, scored: str, kind: SourceKind | None) -> bool:
    """Whether two sources are the same data: the same text or file, or both CIFAR-10 (a .tar.gz or its folder)."""
    try:
        if trained == scored or Path(trained).expanduser().resolve() == Path(scored).expanduser().resolve():
            return True
        return kind is SourceKind.CIFAR10 and detect_source(trained) is SourceKind.CIFAR10
    except (OSError, RuntimeError, DataError):
        return False
