"""engine/data/: every source, every bad input, and batches that replay exactly."""

from __future__ import annotations

import builtins
import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import (
    BatchPosition,
    DataError,
    DataSpec,
    FitMode,
    ImageDataset,
    LoadOptions,
    SkipReason,
    SourceKind,
    Split,
    UnsafePickleError,
    batches,
    detect_source,
    find_image_files,
    inspect_data,
    load_dataset,
    make_shapes,
    parse_data_spec,
    read_cifar10,
    read_idx,
    read_mnist,
    render_shape,
    to_model_range,
    to_uint8_tensor,
)
from tests import data_fixtures as fx


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def rgb(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def reasons(report) -> dict[str, SkipReason]:
    return {Path(s.path).name: s.reason for s in report.skipped}


# ---- the spec ----


def test_parse_data_spec_reads_options_and_writes_them_back():
    """Options after '?' fill the DataSpec; str(spec) gives text that parses to the same spec."""
    spec = parse_data_spec("builtin:shapes?size=24x16&channels=1&fit=pad&split=test&count=50&seed=3")
    assert spec == DataSpec("builtin:shapes", (24, 16), 1, FitMode.PAD, Split.TEST, 50, 3)
    assert parse_data_spec(str(spec)) == spec
    assert str(parse_data_spec("builtin:shapes")) == "builtin:shapes"
    assert parse_data_spec("builtin:shapes?size=16").image_size == (16, 16)
    assert parse_data_spec("/data/x", channels=4).channels == 4  # keyword overrides win


def test_parse_data_spec_refuses_nonsense():
    for text in (
        "builtin:shapes?colour=red",
        "builtin:shapes?size=big",
        "builtin:shapes?channels=2",
        "builtin:shapes?fit=stretch",
        "builtin:shapes?count=0",
    ):
        with pytest.raises(ValueError):
            parse_data_spec(text)


def test_detect_source_tells_the_formats_apart(tmp_path):
    save(tmp_path / "photos" / "a.png", rgb(4, 4, (1, 2, 3)))
    fx.write_cifar_folder(tmp_path / "cifar", rows=1)
    (tmp_path / "mnist").mkdir()
    fx.write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", np.zeros((2, 4, 4), np.uint8), gz=True)
    assert detect_source("builtin:shapes") is SourceKind.SHAPES
    assert detect_source(str(tmp_path / "photos")) is SourceKind.FOLDER
    assert detect_source(str(tmp_path / "cifar")) is SourceKind.CIFAR10
    assert detect_source(str(tmp_path / "cifar" / "cifar-10-batches-py")) is SourceKind.CIFAR10
    assert detect_source(str(tmp_path / "mnist")) is SourceKind.IDX
    assert detect_source(str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")) is SourceKind.IDX
    for bad in ("builtin:faces", str(tmp_path / "missing"), str(tmp_path / "photos" / "a.png")):
        with pytest.raises(DataError):
            detect_source(bad)


# ---- builtin:shapes ----


def test_shapes_are_a_function_of_seed_split_and_index():
    """Same seed, same images; image i does not depend on how many are generated; seeds and splits differ."""
    a = make_shapes(12, (16, 16), Split.TRAIN, seed=0)
    assert torch.equal(a, make_shapes(12, (16, 16), Split.TRAIN, seed=0))
    assert torch.equal(a[5:], make_shapes(7, (16, 16), Split.TRAIN, seed=0, start=5))
    assert torch.equal(a[:3], load_dataset("builtin:shapes?size=16&count=3").images)
    test = make_shapes(12, (16, 16), Split.TEST, seed=0)
    other = make_shapes(12, (16, 16), Split.TRAIN, seed=1)
    assert all(not torch.equal(a[i], test[i]) and not torch.equal(a[i], other[i]) for i in range(12))


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (24, 40)])
def test_shapes_stand_out_from_their_background(size):
    """Each image: the most common colour (the background) covers much of it, and the shape's colour is far from it
    in RGB and in luma; edges are antialiased (some pixels lie between the two)."""
    blended = 0
    for i in range(40):
        image = render_shape(i, size).reshape(-1, 3).astype(int)
        assert image.shape == (size[0] * size[1], 3)
        colours, counts = np.unique(image, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        assert counts.max() >= 0.3 * len(image)
        distance = np.linalg.norm(image - background, axis=1)
        assert distance.max() >= 150  # the shape's interior
        luma = np.array([0.299, 0.587, 0.114])
        assert np.abs((image - background) @ luma).max() >= 55
        blended += int(((distance > 10) & (distance < distance.max() - 10)).sum())
    assert blended > 0


def test_builtin_shapes_default_counts_and_channels():
    report = inspect_data("builtin:shapes")
    assert report.ok and report.count == 10_000 and report.channels == 3 and report.memory_bytes == 10_000 * 3 * 32 * 32
    assert inspect_data("builtin:shapes?split=test").count == 1_000
    gray = load_dataset("builtin:shapes?size=8&count=4&channels=1")
    assert gray.images.shape == (4, 1, 8, 8)
    rgba = load_dataset("builtin:shapes?size=8&count=4&channels=4")
    assert rgba.images.shape == (4, 4, 8, 8) and bool((rgba.images[:, 3] == 255).all())


# ---- a folder of the user's images ----


@pytest.fixture()
def messy_folder(tmp_path) -> Path:
    """Three good images, one of every kind of bad file, a symlink loop, and files that are not images at all."""
    root = tmp_path / "photos"
    save(root / "good1.png", rgb(40, 30, (200, 10, 10)))
    save(root / "sub" / "good2.jpg", rgb(30, 40, (10, 200, 10)), quality=95)
    save(root / "sub" / "deeper" / "good3.webp", rgb(32, 32, (10, 10, 200)), lossless=True)
    fx.write_truncated_png(root / "truncated.png")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is text, not a JPEG")
    fx.write_png_bomb(root / "bomb.png")
    (root / "README.txt").write_text("ignored")
    os.symlink(root, root / "sub" / "loop")  # os.walk(followlinks=True) would go round forever
    os.symlink(root / "selfloop.png", root / "selfloop.png")
    os.symlink(root / "gone.png", root / "dangling.png")
    return root


def test_inspector_reports_every_bad_file_and_goes_on(messy_folder):
    report = inspect_data(str(messy_folder))
    assert report.ok and report.count == 3 and report.channels == 3 and report.verified
    assert reasons(report) == {
        "truncated.png": SkipReason.TRUNCATED,
        "empty.png": SkipReason.EMPTY,
        "notes.jpg": SkipReason.NOT_AN_IMAGE,
        "bomb.png": SkipReason.DECOMPRESSION_BOMB,
        "loop": SkipReason.SYMLINK_LOOP,
        "selfloop.png": SkipReason.SYMLINK_LOOP,
        "dangling.png": SkipReason.BROKEN_LINK,
    }
    bomb = next(s for s in report.skipped if s.path.endswith("bomb.png"))
    assert "400,000,000 pixels" in bomb.detail
    assert report.ignored == {".txt": 1}
    assert report.formats == {"PNG": 1, "JPEG": 1, "WEBP": 1}
    assert report.memory_bytes == 3 * 3 * 32 * 32
    assert any("memorises" in w for w in report.warnings)  # 3 images: a warning, not a refusal
    text = report.format()
    for needle in (
        "3 images",
        "decompression bomb",
        "400,000,000 pixels",
        "truncated",
        "zero bytes",
        "symlink loop",
        "not an image",
        "warning:",
    ):
        assert needle in text


def test_headers_only_inspection_does_not_decode(messy_folder):
    """verify=False reads headers only: the truncated PNG's header is fine, so it counts until it is decoded."""
    report = inspect_data(str(messy_folder), verify=False)
    assert report.count == 4 and not report.verified and "truncated.png" not in reasons(report)


def test_loading_a_messy_folder_keeps_the_good_images(messy_folder):
    dataset = load_dataset(parse_data_spec(str(messy_folder), image_size=(16, 16)))
    assert dataset.in_memory and dataset.images.shape == (3, 3, 16, 16) and dataset.images.dtype == torch.uint8
    assert "truncated.png" in reasons(dataset.report)  # found by the decode that loading does anyway
    centres = dataset.images[:, :, 8, 8].tolist()  # files in walk order: good1.png, then sub/good2.jpg, sub/deeper/...
    assert centres[0] == [200, 10, 10] and centres[2] == [10, 10, 200]
    assert max(abs(a - b) for a, b in zip(centres[1], [10, 200, 10])) <= 3  # JPEG


def test_find_image_files_terminates_on_loops_and_skips_hidden(tmp_path):
    save(tmp_path / "a" / "x.png", rgb(2, 2, (0, 0, 0)))
    save(tmp_path / ".git" / "y.png", rgb(2, 2, (0, 0, 0)))
    (tmp_path / "a" / "._x.png").write_bytes(b"\0\5\26\7")  # macOS resource fork
    os.symlink(tmp_path / "a", tmp_path / "b")  # the same folder twice, not a loop
    os.symlink(tmp_path, tmp_path / "a" / "up")  # a loop
    files, skipped, ignored = find_image_files(tmp_path)
    assert [f.name for f in files] == ["x.png"]
    assert {Path(s.path).name: s.reason for s in skipped} == {
        "b": SkipReason.DUPLICATE_FOLDER,
        "up": SkipReason.SYMLINK_LOOP,
    }
    assert ignored == {"hidden folder": 1, ".png": 1}


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root reads files whatever their permissions; the monkeypatched test covers this",
)
def test_unreadable_file_chmod(tmp_path):
    save(tmp_path / "ok.png", rgb(4, 4, (1, 1, 1)))
    secret = save(tmp_path / "secret.png", rgb(4, 4, (1, 1, 1)))
    secret.chmod(0)
    try:
        report = inspect_data(str(tmp_path))
    finally:
        secret.chmod(0o644)
    assert report.count == 1 and reasons(report) == {"secret.png": SkipReason.UNREADABLE}


def test_unreadable_file_permission_denied(tmp_path, monkeypatch):
    """A file open() refuses (as chmod 000 does for a normal user) is reported, not raised."""
    save(tmp_path / "ok.png", rgb(4, 4, (1, 1, 1)))
    secret = save(tmp_path / "secret.png", rgb(4, 4, (1, 1, 1)))
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == str(secret):
            raise PermissionError(13, "Permission denied", str(secret))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    report = inspect_data(str(tmp_path))
    assert report.count == 1 and reasons(report) == {"secret.png": SkipReason.UNREADABLE}
    assert "Permission denied" in report.skipped[0].detail


def test_every_pillow_mode_becomes_rgb(tmp_path):
    """CMYK, 16-bit, 32-bit int and float, palette with transparency, LA, RGBA, 1-bit, a GIF's first frame, BMP, TIFF:
    all load as 3 channels; transparency is composited onto white."""
    cases = {
        "cmyk.jpg": (Image.new("CMYK", (8, 8), (0, 255, 0, 0)), [255, 0, 255], 4),  # magenta
        "g16.png": (Image.fromarray(np.full((8, 8), 65535, np.uint16)), [255, 255, 255], 0),
        "i32.tif": (Image.fromarray(np.full((8, 8), 32896, np.int32)), [128, 128, 128], 0),
        "float.tif": (Image.fromarray(np.full((8, 8), 0.5, np.float32)), [128, 128, 128], 0),
        "la.png": (Image.new("LA", (8, 8), (0, 0)), [255, 255, 255], 0),  # fully transparent black -> white
        "rgba.png": (Image.new("RGBA", (8, 8), (0, 0, 255, 128)), [127, 127, 255], 1),  # half over white
        "one.png": (Image.new("1", (8, 8), 1), [255, 255, 255], 0),
        "x.bmp": (rgb(8, 8, (1, 2, 3)), [1, 2, 3], 0),
        "x.tif": (rgb(8, 8, (4, 5, 6)), [4, 5, 6], 0),
    }
    for name, (image, _, _) in cases.items():
        save(tmp_path / name, image)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 4, 8))  # left half red, right half index 0: transparent
    save(tmp_path / "palette.png", palette, transparency=0)
    frames = [rgb(8, 8, (255, 0, 0)), rgb(8, 8, (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])

    dataset = load_dataset(parse_data_spec(str(tmp_path), image_size=(8, 8)))
    assert dataset.report.skipped == () and dataset.images.shape == (len(cases) + 2, 3, 8, 8)
    by_name = dict(zip(sorted([*cases, "palette.png", "anim.gif"]), dataset.images))
    for name, (_, expected, tolerance) in cases.items():
        assert (by_name[name][:, 4, 4].int() - torch.tensor(expected)).abs().max() <= tolerance, name
    assert by_name["palette.png"][:, 4, 1].tolist() == [255, 0, 0]
    assert by_name["palette.png"][:, 4, 6].tolist() == [255, 255, 255]
    assert by_name["anim.gif"][:, 4, 4].tolist() == [255, 0, 0]  # the first frame
    assert {"CMYK", "I;16", "I", "F", "LA", "RGBA", "1", "P", "RGB"} <= set(dataset.report.modes)


def test_four_channels_keep_alpha(tmp_path):
    save(tmp_path / "rgba.png", Image.new("RGBA", (8, 8), (0, 0, 255, 128)))
    save(tmp_path / "la.png", Image.new("LA", (8, 8), (50, 0)))
    dataset = load_dataset(parse_data_spec(str(tmp_path), image_size=(8, 8), channels=4))
    assert dataset.images.shape == (2, 4, 8, 8)
    assert dataset.images[:, :, 0, 0].tolist() == [[50, 50, 50, 0], [0, 0, 255, 128]]  # la.png sorts first


def test_grayscale_folder_gives_one_channel(tmp_path):
    save(tmp_path / "a.png", Image.new("L", (8, 8), 10))
    save(tmp_path / "b.png", Image.fromarray(np.full((8, 8), 257 * 20, np.uint16)))
    save(tmp_path / "c.png", Image.new("LA", (8, 8), (30, 255)))
    gray = load_dataset(parse_data_spec(str(tmp_path), image_size=(8, 8)))
    assert gray.channels == 1 and gray.images[:, 0, 0, 0].tolist() == [10, 20, 30]
    save(tmp_path / "d.png", rgb(8, 8, (1, 2, 3)))
    assert load_dataset(parse_data_spec(str(tmp_path), image_size=(8, 8))).channels == 3
    forced = inspect_data(parse_data_spec(str(tmp_path), image_size=(8, 8), channels=1))
    assert forced.channels == 1 and any("grayscale" in w for w in forced.warnings)


def test_exif_orientation_is_honoured(tmp_path):
    """Stored 20 wide x 10 high with orientation 6: upright it is 10 wide x 20 high, red on top, blue below."""
    fx.write_exif_rotated_jpeg(tmp_path / "phone.jpg")
    image = load_dataset(parse_data_spec(str(tmp_path), image_size=(20, 10))).images[0]
    assert image[:, 2, 5].tolist()[0] > 200 and image[:, 2, 5].tolist()[2] < 50  # top: red
    assert image[:, 17, 5].tolist()[2] > 200 and image[:, 17, 5].tolist()[0] < 50  # bottom: blue


def test_crop_and_pad_to_non_square_sizes(tmp_path):
    """A 40x20 (wide) image with a red left half and blue right half, brought to 10 high x 10 wide."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    save(tmp_path / "wide.png", Image.fromarray(pixels))
    crop = load_dataset(parse_data_spec(str(tmp_path), image_size=(10, 10))).images[0]
    assert crop[:, 5, 0].tolist() == [255, 0, 0] and crop[:, 5, 9].tolist() == [0, 0, 255]  # the centre 20x20
    pad = load_dataset(parse_data_spec(str(tmp_path), image_size=(10, 10), fit=FitMode.PAD)).images[0]
    assert pad[:, 0, 5].tolist() == [0, 0, 0] and pad[:, 9, 5].tolist() == [0, 0, 0]  # letterbox bars
    assert pad[:, 5, 0].tolist() == [255, 0, 0] and pad[:, 5, 9].tolist() == [0, 0, 255]
    tall = load_dataset(parse_data_spec(str(tmp_path), image_size=(6, 12))).images
    assert tall.shape == (1, 3, 6, 12)


def test_inspector_never_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"\1\2\3")
    for spec in (
        str(tmp_path / "missing"),
        str(tmp_path / "empty"),
        str(tmp_path / "file.bin"),
        "builtin:nothing",
        "builtin:shapes?colour=red",
    ):
        report = inspect_data(spec)
        assert not report.ok and report.error and "error:" in report.format()
    with pytest.raises(DataError):
        load_dataset(str(tmp_path / "empty"))


def test_progress_is_reported_and_its_exceptions_pass_through(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", rgb(4, 4, (i, i, i)))
    seen = []
    load_dataset(parse_data_spec(str(tmp_path), image_size=(4, 4)), progress=seen.append)
    assert {p.stage for p in seen} == {"reading headers", "decoding"} and seen[-1].done == seen[-1].total == 3

    class Cancelled(Exception):
        pass

    def cancel(_):
        raise Cancelled()

    with pytest.raises(Cancelled):
        inspect_data(str(tmp_path), progress=cancel)


def test_large_folders_stream_and_match_the_in_memory_batches(tmp_path):
    """Above the memory limit the same images come from a thread pool, in the same order; a file that fails only
    when decoded is dropped from its batch and recorded."""
    for i in range(10):
        save(tmp_path / f"{i:02d}.png", Image.fromarray(np.full((6, 6, 3), i * 20, np.uint8)))
    spec = parse_data_spec(str(tmp_path), image_size=(6, 6))
    memory = load_dataset(spec)
    streamed = load_dataset(spec, options=LoadOptions(memory_limit_bytes=100, workers=2, prefetch_batches=2))
    assert memory.in_memory and not streamed.in_memory and streamed.report.streamed
    a = batches(memory, 4, torch.Generator().manual_seed(5), hflip=True)
    b = batches(streamed, 4, torch.Generator().manual_seed(5), hflip=True)
    for _ in range(6):
        assert torch.equal(next(a), next(b))
    b.close()
    assert torch.equal(streamed[3], memory.images[3])

    fx.write_truncated_png(tmp_path / "05.png", size=6)  # its header still reads as a 6x6 PNG
    broken = load_dataset(spec, options=LoadOptions(memory_limit_bytes=100, workers=2))
    stream = batches(broken, 10, torch.Generator().manual_seed(0), hflip=False)
    assert next(stream).shape == (9, 3, 6, 6)
    stream.close()
    assert [Path(s.path).name for s in broken.stream_skipped] == ["05.png"]


# ---- CIFAR-10 ----


def test_cifar10_python_folder_as_python2_wrote_it(tmp_path):
    contents = fx.write_cifar_folder(tmp_path, rows=3, py2=True)
    images, labels = read_cifar10(tmp_path, Split.TRAIN)
    expected = np.concatenate([contents[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert images.shape == (15, 3, 32, 32) and np.array_equal(images.reshape(15, -1), expected)
    assert labels.tolist() == sum((contents[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    dataset = load_dataset(parse_data_spec(str(tmp_path), split=Split.TEST))
    assert dataset.images.shape == (3, 3, 32, 32) and dataset.labels.tolist() == contents["test_batch"][1]
    assert torch.equal(dataset.images[1, 2], torch.from_numpy(contents["test_batch"][0][1, 2048:].reshape(32, 32)))


def test_cifar10_tar_gz_and_python3_pickles(tmp_path):
    contents = fx.write_cifar_folder(tmp_path / "src", rows=2, py2=False)
    archive = fx.write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / "src")
    assert detect_source(str(archive)) is SourceKind.CIFAR10
    images, labels = read_cifar10(archive, Split.TEST)
    assert np.array_equal(images.reshape(2, -1), contents["test_batch"][0])
    assert labels.tolist() == contents["test_batch"][1]
    resized = load_dataset(parse_data_spec(str(archive), image_size=(16, 16), channels=1))
    assert resized.images.shape == (10, 1, 16, 16)
    report = inspect_data(str(archive))
    assert report.count == 10 and report.kind is SourceKind.CIFAR10 and report.channels == 3


def test_cifar10_reader_refuses_malicious_pickles(tmp_path):
    """A batch that names os.system (or smuggles objects in an object array) is refused before anything runs."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(fx.malicious_pickle(f"touch {marker}"))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        read_cifar10(folder, Split.TEST)
    assert not marker.exists()
    report = inspect_data(parse_data_spec(str(folder), split=Split.TEST))
    assert not report.ok and "refused" in report.error and not marker.exists()
    (folder / "test_batch").write_bytes(fx.object_array_pickle())
    with pytest.raises(UnsafePickleError, match="dtype"):
        read_cifar10(folder, Split.TEST)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # cut short
    with pytest.raises(DataError, match="not a readable CIFAR-10 batch"):
        read_cifar10(folder, Split.TEST)
    with open(folder / "test_batch", "wb") as f:
        f.truncate(200 * 2**20)  # sparse: a "batch" of 200 MiB is not read at all
    with pytest.raises(DataError, match="more than a CIFAR-10 batch has"):
        read_cifar10(folder, Split.TEST)


# ---- MNIST IDX ----


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    raw = tmp_path / "FashionMNIST" / "raw"  # torchvision's layout
    raw.mkdir(parents=True)
    fx.write_idx(raw / f"train-images-idx3-ubyte{suffix}", train, gz)
    fx.write_idx(raw / f"train-labels-idx1-ubyte{suffix}", np.arange(5, dtype=np.uint8), gz)
    fx.write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", test, gz)
    assert np.array_equal(read_idx(raw / f"train-images-idx3-ubyte{suffix}"), train)
    images, labels = read_mnist(tmp_path, Split.TRAIN)
    assert np.array_equal(images[:, 0], train) and labels.tolist() == [0, 1, 2, 3, 4]
    native = load_dataset(parse_data_spec(str(tmp_path), image_size=(28, 28), split=Split.TEST))
    assert native.channels == 1 and torch.equal(native.images[:, 0], torch.from_numpy(test)) and native.labels is None
    single = load_dataset(parse_data_spec(str(raw / f"train-images-idx3-ubyte{suffix}")))  # one file; default 32x32
    assert single.images.shape == (5, 1, 32, 32) and single.labels.tolist() == [0, 1, 2, 3, 4]


def test_damaged_idx_files_are_refused_clearly(tmp_path):
    good = fx.idx_bytes(np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(good[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-30])
    with pytest.raises(DataError):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "huge").write_bytes(b"\0\0\x08\x03" + b"\xff\xff\xff\xff" * 3)  # claims 2^96 bytes
    with pytest.raises(DataError, match="claims"):
        read_idx(tmp_path / "huge")
    assert "truncated" in inspect_data(str(tmp_path / "train-images-idx3-ubyte")).error


# ---- pixels and batches ----


def test_uint8_and_model_range_round_trip():
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    x = to_model_range(values)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8_tensor(x), values)
    assert to_uint8_tensor(torch.tensor([-3.0, 3.0, 0.0])).tolist() == [0, 255, 128]


@pytest.fixture()
def striped() -> ImageDataset:
    """16 images 2x4 whose left column holds the index and right column 255 - index: flips are visible."""
    images = torch.zeros(16, 1, 2, 4, dtype=torch.uint8)
    for i in range(16):
        images[i, :, :, 0] = i
        images[i, :, :, 3] = 255 - i
    return ImageDataset.from_images(images)


def _decode(batch: torch.Tensor) -> list[tuple[int, bool]]:
    """(image index, flipped) of each image of a batch of `striped` images."""
    left = to_uint8_tensor(batch)[:, 0, 0, 0].tolist()
    right = to_uint8_tensor(batch)[:, 0, 0, 3].tolist()
    return [(a, False) if a < 128 else (b, True) for a, b in zip(left, right)]


def test_batches_shuffle_each_epoch_and_replay_by_seed(striped):
    stream = batches(striped, 4, torch.Generator().manual_seed(0), hflip=True)
    epochs = [[i for b in [next(stream) for _ in range(4)] for i, _ in _decode(b)] for _ in range(3)]
    assert all(sorted(e) == list(range(16)) for e in epochs)  # each epoch shows every image once
    assert epochs[0] != epochs[1] != epochs[2]
    assert stream.position == BatchPosition(3, 0)
    again = batches(striped, 4, torch.Generator().manual_seed(0), hflip=True)
    assert [i for b in [next(again) for _ in range(4)] for i, _ in _decode(b)] == epochs[0]
    other = batches(striped, 4, torch.Generator().manual_seed(1), hflip=True)
    assert [i for b in [next(other) for _ in range(4)] for i, _ in _decode(b)] != epochs[0]
    first = next(batches(striped, 4, torch.Generator().manual_seed(0), hflip=True))
    assert first.dtype == torch.float32 and first.shape == (4, 1, 2, 4) and first.min() >= -1 and first.max() <= 1


def test_batches_resume_exactly_from_a_position(striped):
    """Stop after k batches, keep `position`, start again from it: the same batches follow, bit for bit, including
    batches that straddle an epoch boundary (16 images, batches of 5)."""
    reference = batches(striped, 5, torch.Generator().manual_seed(7), hflip=True)
    expected = [next(reference) for _ in range(9)]
    first = batches(striped, 5, torch.Generator().manual_seed(7), hflip=True)
    for _ in range(4):
        next(first)
    position = first.position
    assert position == BatchPosition(1, 4)  # 20 images: one epoch of 16, then 4
    resumed = batches(striped, 5, torch.Generator().manual_seed(7), hflip=True, start=position)
    for k in range(4, 9):
        assert torch.equal(next(resumed), expected[k])
    with pytest.raises(ValueError):
        batches(striped, 5, torch.Generator(), start=BatchPosition(0, 17))


def test_hflip_flips_about_half(striped):
    stream = batches(striped, 16, torch.Generator().manual_seed(3), hflip=True)
    flips = [f for _ in range(20) for _, f in _decode(next(stream))]
    assert 0.4 < sum(flips) / len(flips) < 0.6
    plain = batches(striped, 16, torch.Generator().manual_seed(3), hflip=False)
    flipped = batches(striped, 16, torch.Generator().manual_seed(3), hflip=True)
    for _ in range(3):
        a, b = _decode(next(plain)), _decode(next(flipped))
        assert not any(f for _, f in a)
        assert [i for i, _ in a] == [i for i, _ in b]  # flips do not change the order


def test_batches_larger_than_the_dataset():
    small = load_dataset("builtin:shapes?size=4&count=3")
    batch = next(batches(small, 8, torch.Generator().manual_seed(0), hflip=False))
    assert batch.shape == (8, 3, 4, 4)  # three epochs' worth: no image dropped, none refused


def test_spec_is_a_frozen_dataclass_with_json_friendly_fields():
    spec = parse_data_spec("builtin:shapes?size=16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.count = 3
    assert DataSpec(image_size=[16, 16]).image_size == (16, 16)  # JSON gives lists
