"""The training images: where they come from, what was wrong with them, and how they reach the training step.

Sources (a `DataSpec` names one; `parse_data_spec` reads one from text such as "builtin:shapes?size=16"):
  builtin:shapes  our procedural dataset (one filled circle, square or triangle on a plain background), so the studio
                  trains with no download; image i depends only on (seed, split, i)
  a folder        the user's images, searched recursively: PNG, JPEG, WebP, BMP, TIFF, GIF (first frame)
  CIFAR-10        the python version, `cifar-10-batches-py/` or `cifar-10-python.tar.gz`, read by a restricted
                  unpickler that can build numpy arrays and nothing else
  MNIST IDX       MNIST / Fashion-MNIST `*-images-idx3-ubyte[.gz]`: a file, or the folder that holds them

`inspect_data` never raises: it reports what it found, what it skipped and why. `load_dataset` decodes a small dataset
once into a uint8 tensor [N, C, H, W]; a large one stays on disk and a thread pool decodes it ahead of the training
step. `batches` yields [-1, 1] float batches in an order fixed by a seed and resumable at any `BatchPosition`.

The modules, each importing only those above it:
  spec.py       DataSpec, parse_data_spec, Split / FitMode / SourceKind, LoadOptions, DataError
  report.py     DataReport, SkippedFile, SkipReason: what the inspector found
  shapes.py     builtin:shapes
  files.py      image files: finding, probing (header only), decoding with Pillow
  formats.py    detect_source; CIFAR-10 (restricted unpickler) and MNIST IDX
  sources.py    image i of any source, decoded on demand; decoding all of them on a thread pool
  inspector.py  inspect_data; held_out_notes (what a likelihood figure was computed on)
  dataset.py    ImageDataset, load_dataset
  batches.py    batches: shuffled, flipped, exactly resumable; the uint8 <-> [-1, 1] tensor conversions
Everything public is re-exported here: import from `engine.data`, not from its modules.
"""

from .batches import BatchIterator, BatchPosition, batches, to_model_range, to_uint8_tensor
from .dataset import ImageDataset, load_dataset
from .files import IMAGE_EXTENSIONS, decode_image, find_image_files, fit_array
from .formats import (
    RestrictedUnpickler,
    UnsafePickleError,
    detect_source,
    flips_for,
    read_cifar10,
    read_cifar10_batch,
    read_idx,
    read_mnist,
)
from .inspector import FEW_IMAGES, HeldOutNotes, held_out_notes, inspect_data
from .report import DataReport, SkippedFile, SkipReason
from .shapes import SHAPES_COUNT, make_shapes, render_shape
from .spec import (
    DataError,
    DataSpec,
    FitMode,
    LoadOptions,
    ProgressCallback,
    SourceKind,
    Split,
    flips_by_default,
    flips_note,
    parse_data_spec,
)

__all__ = [
    # spec
    "DataError",
    "DataSpec",
    "FitMode",
    "LoadOptions",
    "ProgressCallback",
    "SourceKind",
    "Split",
    "flips_by_default",
    "flips_note",
    "flips_for",
    "parse_data_spec",
    # report
    "DataReport",
    "SkipReason",
    "SkippedFile",
    # shapes
    "SHAPES_COUNT",
    "make_shapes",
    "render_shape",
    # files
    "IMAGE_EXTENSIONS",
    "decode_image",
    "fit_array",
    "find_image_files",
    # formats
    "RestrictedUnpickler",
    "UnsafePickleError",
    "detect_source",
    "read_cifar10",
    "read_cifar10_batch",
    "read_idx",
    "read_mnist",
    # inspector
    "FEW_IMAGES",
    "HeldOutNotes",
    "held_out_notes",
    "inspect_data",
    # dataset
    "ImageDataset",
    "load_dataset",
    # batches
    "BatchIterator",
    "BatchPosition",
    "batches",
    "to_model_range",
    "to_uint8_tensor",
]
