"""Engine-side studio jobs, driven directly (no thread, no Qt)."""

import numpy as np
import torch

from engine.images import from_uint8
from engine.jobs import LikelihoodResult, likelihood_job, load_model_job
from engine.likelihood import evaluate_bound
from engine.session import EngineSession
from engine.worker import JobContext


class _Worker:
    def __init__(self):
        self.state = EngineSession()


def _run(job, ctx):
    gen = job(ctx)
    if not hasattr(gen, "__next__"):
        return gen
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value


def test_likelihood_in_minibatches_matches_the_bound_of_each_minibatch(micro_run):
    """Minibatching the bound changes nothing but memory: each minibatch's terms equal evaluate_bound's on it,
    with the generator continuing from one minibatch to the next."""
    ctx = JobContext(_Worker(), 1)
    _run(load_model_job(str(micro_run)), ctx)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    result = _run(likelihood_job(images, seed=3, batch_size=2), ctx)
    assert isinstance(result, LikelihoodResult) and result.images == 5 and len(result.rate) == 101

    loaded = ctx.state.model
    g = torch.Generator().manual_seed(3)
    x0 = from_uint8(images)
    totals = torch.cat(
        [evaluate_bound(loaded.denoiser(), loaded.diffusion, x0[i : i + 2], g).total_bpd for i in (0, 2, 4)]
    )
    assert abs(float(totals.mean()) - result.bits_per_dim) < 1e-4


def test_held_out_images_reads_the_split_without_replacing_the_loaded_dataset():
    """held_out_images_job returns the first n images of a spec's split as [n, H, W, C] uint8, the same images a
    dataset load of that split holds, and 'all' (None) the whole split; the engine's loaded dataset stays as it was."""
    from engine.data import load_dataset
    from engine.data_jobs import dataset_job, held_out_images_job

    ctx = JobContext(_Worker(), 1)
    _run(dataset_job("builtin:shapes?size=8&count=16"), ctx)
    loaded = ctx.state.dataset
    held_out = _run(held_out_images_job("builtin:shapes?size=8&split=test", 300, "builtin:shapes", chunk=128), ctx)
    images = held_out.images
    assert held_out.scored == "builtin:shapes test split" and held_out.warnings == ()
    assert images.shape == (300, 8, 8, 3) and images.dtype == np.uint8
    test_split = load_dataset("builtin:shapes?size=8&split=test&count=300").images  # [N, C, H, W]
    np.testing.assert_array_equal(images, test_split.permute(0, 2, 3, 1).numpy())
    assert not np.array_equal(images[:16], loaded.images.permute(0, 2, 3, 1).numpy())  # test != train images
    assert ctx.state.dataset is loaded

    everything = _run(held_out_images_job("builtin:shapes?size=8&split=test", None), ctx).images
    assert len(everything) == 1000  # the built-in shapes' whole test split


def test_held_out_notes_say_what_was_scored_and_warn_where_the_figure_misleads(tmp_path):
    """The scored data in words (a folder has no held-out split), and one warning for each way the bound may not be
    the model's own figure: other data than it trained on, its own training images, images stored at another size,
    grayscale images in a colour model (or colour in a grayscale one), a training set not recorded (imported)."""
    from PIL import Image

    from engine.data import held_out_notes, load_dataset
    from tests.data_fixtures import write_cifar_folder

    folder = tmp_path / "pets"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((12, 12), 40 * i, np.uint8), "L").save(folder / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "small.png")
    (folder / "notes.txt").write_text("not an image")
    colour_model = load_dataset(f"{folder}?size=8&channels=3").report

    notes = held_out_notes(colour_model, "builtin:shapes?size=8")
    assert notes.scored == "the folder pets (all of it: a folder has no held-out split)"
    assert [w.split(" ")[:4] for w in notes.warnings] == [
        ["the", "model", "was", "trained"],  # on builtin:shapes, not on these images
        ["6", "of", "7", "images"],  # stored at 12x12, the model works at 8x8
    ]
    assert "builtin:shapes?size=8" in notes.warnings[0] and "(most often 12x12)" in notes.warnings[1]

    gray_only = load_dataset(f"{folder}?size=12&channels=3&count=6").report
    notes = held_out_notes(gray_only, str(folder))
    assert notes.warnings == (
        "these are the images the model was trained on (a folder has no held-out split): a training-set figure, "
        "lower than a held-out one would be",
        "the images are grayscale and the model works in colour: each is scored as 3 equal channels",
    )
    colour_in_gray = held_out_notes(load_dataset("builtin:shapes?size=8&channels=1&split=test").report, None)
    assert colour_in_gray.scored == "builtin:shapes test split"
    assert colour_in_gray.warnings[0].startswith("the model's training data is not recorded (an imported model)")
    assert colour_in_gray.warnings[1] == "1,000 colour images were converted to grayscale for this 1-channel model"

    write_cifar_folder(tmp_path / "cifar-10-batches-py")
    cifar = load_dataset(f"{tmp_path / 'cifar-10-batches-py'}?split=test").report
    assert held_out_notes(cifar, "builtin:shapes").warnings[0].startswith("the model was trained on builtin:shapes")
    same = held_out_notes(cifar, str(tmp_path / "cifar-10-batches-py"))
    assert same.scored == "CIFAR-10 test split" and same.warnings == ()
    own_train = held_out_notes(load_dataset("builtin:shapes?size=8&count=50").report, "builtin:shapes?size=8")
    assert own_train.scored == "builtin:shapes train split"
    assert own_train.warnings == (
        "these are the images the model was trained on (its train split): a training-set figure, lower than a "
        "held-out one would be",
    )
    other_seed = held_out_notes(load_dataset("builtin:shapes?size=8&split=test").report, "builtin:shapes?seed=3")
    assert other_seed.warnings[0].startswith("the model was trained on builtin:shapes?seed=3")


def test_held_out_images_of_an_unusable_source_fail_with_a_reason(tmp_path):
    """A source with no usable images is a readable failure, not an empty array."""
    import pytest

    from engine.data_jobs import held_out_images_job

    with pytest.raises(RuntimeError, match="no usable images"):
        _run(held_out_images_job(f"{tmp_path / 'nowhere'}?size=8", 4), JobContext(_Worker(), 1))


def test_training_cost_counts_the_u_net_on_the_meta_device():
    """training_cost_job gives the U-Net's exact parameter count and forward FLOPs at the requested image size and
    channels (where attention sits depends on the size); a 4x larger image costs about 4x the FLOPs and activations."""
    import dataclasses

    from engine.config import PRESETS
    from engine.jobs import training_cost_job
    from engine.unet import UNet, count_parameters, forward_flops

    micro = PRESETS["micro"].unet
    cost = _run(training_cost_job(micro), JobContext(_Worker(), 1))
    assert cost.parameters == count_parameters(UNet(micro)) and cost.forward_flops == forward_flops(micro)
    assert 0 < cost.activation_bytes < 10e6
    larger = dataclasses.replace(micro, image_size=(16, 16), in_channels=1)
    large = _run(training_cost_job(larger), JobContext(_Worker(), 1))
    assert large.parameters == count_parameters(UNet(larger))
    assert 3 < large.forward_flops / cost.forward_flops < 6 and 3 < large.activation_bytes / cost.activation_bytes < 6


def test_the_settled_chain_fits_its_time_budget():
    """The settled stage takes as many strided steps as fit about 0.8 s at the measured cost of one evaluation:
    all 100 for a fast model, fewer for a slow one, never below 5."""
    from engine.refine import SETTLED_MIN_STEPS, SETTLED_STEPS, settled_steps_for

    assert settled_steps_for(0.001) == SETTLED_STEPS == 100
    assert settled_steps_for(0.08) == 10  # 0.8 s / 0.08 s
    assert settled_steps_for(0.5) == SETTLED_MIN_STEPS == 5  # the 35.7M model on a 2-core CPU: a rough preview
    assert settled_steps_for(0.0) == SETTLED_STEPS


def test_the_interpolation_job_encodes_once_and_equals_the_samplers_strip(micro_run):
    """The job encodes A and B once and hands every stage the same mixed latents (Fig. 8), its chain's noise
    continuing the seed's stream: the exact stage equals sampling.interpolate with that seed, bit for bit; the
    earlier stages say which stage follows and how long it runs."""
    from engine.images import to_uint8
    from engine.jobs import interpolate_job
    from engine.refine import Refined, Stage
    from engine.sampling import interpolate, sample

    ctx = JobContext(_Worker(), 1)
    _run(load_model_job(str(micro_run)), ctx)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    stages = []
    gen = interpolate_job(a, b, 60, [0.0, 0.5, 1.0], seed=4)(ctx)
    try:
        while True:
            value = next(gen)
            if isinstance(value, Refined):
                stages.append(value)
    except StopIteration as done:
        exact = done.value
    assert [s.stage for s in stages] == [Stage.DIRECT, Stage.SETTLED] and exact.stage is Stage.EXACT
    assert (stages[0].next_stage, stages[1].next_stage, stages[1].next_total) == (Stage.SETTLED, Stage.EXACT, 60)
    assert stages[0].next_total == stages[1].total and exact.next_stage is None
    loaded = ctx.state.model
    x0_a, x0_b = from_uint8(a[None]), from_uint8(b[None])
    g = torch.Generator().manual_seed(4)
    expected = sample(interpolate(loaded.denoiser(), loaded.diffusion, x0_a, x0_b, 60, [0.0, 0.5, 1.0], g))
    np.testing.assert_array_equal(exact.images, to_uint8(expected))
    assert exact.model == loaded.identity and exact.model.step == 6


def test_the_settled_chain_is_sized_from_the_fastest_evaluation_seen_for_its_batch():
    """The first evaluation of a new batch size pays one-time costs (57 ms for a ~12 ms evaluation seen in the
    studio, which chose a 14-step settled chain instead of ~66): the session keeps the fastest time per batch size,
    so only the first request is sized from the slow call; a new model starts afresh."""
    from engine.refine import settled_steps_for

    session = EngineSession()
    assert session.evaluation_time(9, 0.057) == 0.057 and settled_steps_for(0.057) == 14
    assert session.evaluation_time(9, 0.012) == 0.012 and settled_steps_for(0.012) == 66
    assert session.evaluation_time(9, 0.030) == 0.012  # a slower call later (the machine was busy) changes nothing
    assert session.evaluation_time(6, 0.050) == 0.050  # another batch size: its own
    session.explore(object())
    assert session.evaluation_time(9, 0.040) == 0.040
