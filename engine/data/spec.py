"""What to load: a `DataSpec` names a source and the shape every image is brought to; `parse_data_spec` reads one
from text such as "builtin:shapes?size=16" and `str(spec)` writes it back. `LoadOptions` says how to load (memory,
threads), which never changes the images a run trains on; `DataError` is how every module here says a source is
unusable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from PIL import Image

from ..progress import Progress


class DataError(ValueError):
    """A source that cannot be read at all (missing, wrong format, unsafe); the message says why, for a person."""


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


# Random horizontal flips, the paper's augmentation of CIFAR-10 and CelebA-HQ, help only where a mirror image is as
# valid a sample as the original: the built-in shapes and CIFAR-10's photos, yes; handwritten digits (MNIST), no. A
# folder may hold digits, text or anything else, and a mirrored "2" trains the model to draw one, so a folder trains
# without flips unless the user turns them on (photos, faces).
FLIPS_BY_DEFAULT = {SourceKind.SHAPES: True, SourceKind.CIFAR10: True, SourceKind.IDX: False, SourceKind.FOLDER: False}
_KIND_WORDS = {SourceKind.SHAPES: "the built-in shapes", SourceKind.CIFAR10: "CIFAR-10", SourceKind.IDX: "IDX digits"}


def flips_by_default(kind: SourceKind | None) -> bool:
    """Whether a run on data of this kind flips its images at random unless told otherwise."""
    return FLIPS_BY_DEFAULT.get(kind, False)


def flips_note(kind: SourceKind | None) -> str:
    """What the default is for this kind of data and why, and how to change it, in a line."""
    what = _KIND_WORDS.get(kind, "an image folder" if kind is SourceKind.FOLDER else "this source")
    if flips_by_default(kind):
        return (
            f"random horizontal flips: on by default for {what} (a mirror image is as valid); --no-hflip "
            "(the Training tab's Flips) turns them off"
        )
    return (
        f"random horizontal flips: off by default for {what} (a mirrored digit or letter is not a valid sample); "
        "--hflip (the Training tab's Flips) turns them on where a mirror image is as valid (photos, faces)"
    )


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
        return self.to_text()

    def to_text(self, size: bool = False) -> str:
        """`str(spec)`; with `size`, the size is written even where it is the default (`ddpm train` takes a spec
        without a size at its preset's size, so a spec shown for a person to copy names it)."""
        options = []
        if size or self.image_size != (32, 32):
            height, width = self.image_size
            options.append(f"size={height}" if height == width else f"size={height}x{width}")
        for name in ("channels", "fit", "split", "count", "seed"):
            value = getattr(self, name)
            if value != getattr(_DEFAULT_SPEC, name):
                options.append(f"{name}={value.value if isinstance(value, Enum) else value}")
        return self.source + ("?" + "&".join(options) if options else "")


_DEFAULT_SPEC = DataSpec()


def parse_data_spec(text: str, **overrides: Any) -> DataSpec:
    """ "SOURCE" or "SOURCE?key=value&..." -> DataSpec; `overrides` (DataSpec fields) win over the text.

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


ProgressCallback = Callable[[Progress], None]  # may raise to cancel; the exception reaches the caller unchanged
