"""What the inspector found: a `DataReport` (counts, sizes, modes, warnings, its printable text), the files it skipped
(`SkippedFile`) and why (`SkipReason`, and `_classify`, which turns any exception a file raised into one).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from PIL import Image, UnidentifiedImageError

from .spec import DataSpec, SourceKind, flips_by_default, flips_note


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

    @property
    def flips(self) -> bool:
        """Whether a run on this data flips its images at random unless told otherwise (spec.flips_by_default)."""
        return flips_by_default(self.kind)

    def format(self) -> str:
        height, width = self.spec.image_size
        kind = {
            None: "unknown source",
            SourceKind.SHAPES: "built-in",
            SourceKind.FOLDER: "image folder",
            SourceKind.CIFAR10: "CIFAR-10",
            SourceKind.IDX: "IDX",
        }[self.kind]
        lines = [f"{self.spec.source} ({kind}, {self.spec.split.value} split)"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.error and not self.count:
            return "\n".join(lines)  # nothing was read: a count, sizes or memory would only mislead
        lines.append(
            f"  {self.count:,} images -> {self.channels} x {height} x {width}, "
            f"{human_bytes(self.memory_bytes)} as uint8, "
            + ("streamed from disk" if self.streamed else "kept in memory")
            + ("" if self.verified else " (headers read; images not yet decoded)")
        )
        if self.source_sizes:
            by_area = sorted(self.source_sizes, key=lambda hw: (hw[0] * hw[1], hw))
            common = sorted(self.source_sizes.items(), key=lambda kv: -kv[1])[:3]
            lines.append(
                f"  stored sizes (HxW): {by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}; "
                "most common " + ", ".join(f"{h}x{w} ({n:,})" for (h, w), n in common)
            )
        for title, counts in (("modes", self.modes), ("formats", self.formats), ("ignored", self.ignored)):
            if counts:
                ranked = sorted(counts.items(), key=lambda kv: -kv[1])
                lines.append(f"  {title}: " + ", ".join(f"{k} {n:,}" for k, n in ranked))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped):,}:")
            lines += [
                f"    {s.reason.value}: {s.path}" + (f" ({s.detail})" if s.detail else "") for s in self.skipped[:50]
            ]
            if len(self.skipped) > 50:
                lines.append(f"    ... and {len(self.skipped) - 50:,} more")
        if self.ok:
            lines.append(f"  {flips_note(self.kind)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


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
