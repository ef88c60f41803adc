"""Engine-side studio jobs, driven directly (no thread, no Qt)."""
import numpy as np
import torch

from engine.jobs import LikelihoodResult, likelihood_job, load_model_job
from engine.likelihood import evaluate_bound
from engine.images import from_uint8
from engine.worker import JobContext


class _Worker:
    def __init__(self):
        self.state = {}


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

    loaded = ctx.state["model"]
    g = torch.Generator().manual_seed(3)
    x0 = from_uint8(images)
    totals = torch.cat([evaluate_bound(loaded.denoiser(), loaded.diffusion, x0[i:i + 2], g).total_bpd for i in (0, 2, 4)])
    assert abs(float(totals.mean()) - result.bits_per_dim) < 1e-4
