"""Device and precision choice, and the bf16 path agreeing with fp32."""

import shutil
import threading

import pytest
import torch

from engine.config import PRESETS, Precision
from engine.device import Denoiser, autocast, pick_device, resolve_precision
from engine.unet import UNet


def test_pick_device_honours_an_explicit_name_and_falls_back_to_the_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert pick_device() == torch.device("cpu")


def test_explicit_precision_is_kept_and_auto_resolves():
    cpu = torch.device("cpu")
    assert resolve_precision(Precision.FP32, cpu) is Precision.FP32
    assert resolve_precision(Precision.BF16, cpu) is Precision.BF16
    assert resolve_precision(Precision.AUTO, cpu) in (Precision.FP32, Precision.BF16)


def _trained_looking_micro() -> UNet:
    torch.manual_seed(0)
    model = UNet(PRESETS["micro"].unet).eval()
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(0, 0.05)  # undo the zero init so the output is not trivially 0
    return model


def test_bf16_autocast_runs_the_network_in_bf16_and_returns_float32_close_to_fp32():
    """The U-Net under bf16 autocast: convolutions in bf16, eps back in float32 within a few percent of fp32."""
    model = _trained_looking_micro()
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 50, 99])
    with torch.no_grad(), autocast(torch.device("cpu"), Precision.BF16):
        assert model.conv_in(x).dtype == torch.bfloat16
    fp32 = Denoiser(model, Precision.FP32)(x, t)
    bf16 = Denoiser(model, Precision.BF16)(x, t)
    assert fp32.dtype == bf16.dtype == torch.float32
    relative = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert 0 < relative < 0.05


def test_channels_last_gives_the_same_eps():
    model = _trained_looking_micro()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 7])
    reference = Denoiser(model)(x, t)
    assert torch.count_nonzero(reference) > 0
    assert torch.allclose(Denoiser(model, channels_last=True)(x, t), reference, atol=1e-5)


def test_bf16_inference_stays_within_its_stated_tolerance_of_fp32():
    """Sampling and exploring run the network in bf16 where the device runs it natively (LoadedModel.inference,
    AUTO). Against the fp32 path, with the bundled model's trained weights: epsilon within 1% relative RMS and 0.1
    absolute at every t tried (measured: 0.4%, 0.035), and 64 samples of a 50-step chain from the same seed within
    2/255 on average (measured: 0.6/255). The bound is evaluated in fp32 whatever the inference precision."""
    import numpy as np

    from engine.config import Precision
    from engine.images import to_uint8
    from engine.loading import BUNDLED_RUN, load_model
    from engine.sampling import generate

    loaded = load_model(BUNDLED_RUN, device="cpu")
    assert loaded.inference is Precision.AUTO
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for t in (1, 100, 500, 999):
        index = torch.full((16,), t)
        fp32, bf16 = loaded.denoiser(Precision.FP32)(x, index), loaded.denoiser(Precision.BF16)(x, index)
        assert fp32.dtype == bf16.dtype == torch.float32
        assert float((fp32 - bf16).pow(2).mean().sqrt() / fp32.pow(2).mean().sqrt()) < 0.01
        assert float((fp32 - bf16).abs().max()) < 0.1
    samples = {}
    for precision in (Precision.FP32, Precision.BF16):
        steps = generate(
            loaded.denoiser(precision),
            loaded.diffusion,
            (64, 3, 16, 16),
            torch.Generator().manual_seed(3),
            num_steps=50,
        )
        samples[precision] = to_uint8(list(steps)[-1].x_t).astype(int)
    assert np.abs(samples[Precision.FP32] - samples[Precision.BF16]).mean() < 2.0


def test_the_compiled_forward_is_built_in_the_background_and_used_only_where_it_serves(monkeypatch):
    """engine.compiled: the compile runs on a thread of its own (the eager model answers meanwhile), then the
    denoiser calls the compiled module for batches of two or more of its shape and precision, eager for the rest
    (a batch of one would make torch.compile specialise, i.e. compile on the engine thread); a compiled call that
    would have to recompile is answered eagerly, and so is its batch size from then on; any other failure turns the
    compiled path off. torch.compile is replaced by a recording stand-in (the real one is tested below)."""
    import threading

    from engine import compiled
    from engine.config import PRESETS, Precision
    from engine.device import Denoiser
    from engine.unet import UNet

    release, calls = threading.Event(), []

    class StandIn(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, t):
            if not release.is_set():
                release.wait(5)  # the "compile": blocks its own thread, not the caller's
            calls.append(x.shape[0])
            if x.shape[0] == 3:
                raise RuntimeError("Detected recompile when torch.compile stance is 'fail_on_recompile'")
            if x.shape[0] == 5:
                raise RuntimeError("something else broke")
            return self.model(x, t) + 1.0  # a visible mark: this answer came from the compiled path

    monkeypatch.setattr(torch, "compile", lambda model, dynamic: StandIn(model))
    model = UNet(PRESETS["micro"].unet).eval().requires_grad_(False)
    handle = compiled.start(model, (3, 8, 8), Precision.FP32)
    denoiser = Denoiser(model, Precision.FP32, compiled=handle)
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 5)
    eager = denoiser.model(x, t)
    assert handle.state == "compiling" and torch.equal(denoiser(x, t), eager)  # served eagerly meanwhile
    release.set()
    for _ in range(500):
        if handle.state == "ready":
            break
        threading.Event().wait(0.01)
    assert handle.state == "ready" and calls == [6]  # the dummy batch of the compile
    assert torch.allclose(denoiser(x, t), eager + 1.0)  # compiled now
    assert torch.equal(denoiser(x[:1], t[:1]), model(x[:1], t[:1]))  # a batch of one: eager
    assert torch.equal(Denoiser(model, Precision.BF16, compiled=handle)(x, t), Denoiser(model, Precision.BF16)(x, t))
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # another thread count: torch.compile would recompile, so eager answers
    try:
        assert torch.equal(denoiser(x, t), eager)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(denoiser(x[:3], t[:3]), model(x[:3], t[:3]))  # a guard excludes 3 images: eager answers
    assert handle.state == "ready" and handle.unserved == {3}  # ... for that batch size only
    assert torch.equal(denoiser(x[:3], t[:3]), model(x[:3], t[:3])) and calls == [6, 4, 3]  # not tried again
    assert torch.allclose(denoiser(x, t), eager + 1.0)  # other sizes stay compiled
    x5, t5 = torch.randn(5, 3, 8, 8), torch.full((5,), 5)
    assert torch.equal(denoiser(x5, t5), model(x5, t5))  # any other failure: eager answers ...
    assert handle.state == "failed" and "something else broke" in handle.error  # ... and from now on
    assert torch.equal(denoiser(x, t), eager) and calls == [6, 4, 3, 4, 5]


def test_compiling_is_off_where_it_cannot_pay(monkeypatch):
    from engine.compiled import compile_available

    assert "DDPM_COMPILE=1 turns it on" in compile_available(torch.device("cpu"))  # opt-in
    monkeypatch.setenv("DDPM_COMPILE", "1")
    if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"):
        assert compile_available(torch.device("cpu")) is None
    assert compile_available(torch.device("mps")) == "no compiled path for mps"
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert "no C++ compiler" in compile_available(torch.device("cpu"))


def _compile_and_compare() -> dict:
    """The micro model compiled for real through engine.compiled, against its eager fp32 forward (run in a child
    process by the test below)."""
    from engine import compiled

    assert compiled.compile_available(torch.device("cpu")) is None
    model = _trained_looking_micro().requires_grad_(False)
    handle = compiled.start(model, (3, 8, 8), Precision.FP32)
    for _ in range(3000):
        if handle.state != "compiling":
            break
        threading.Event().wait(0.1)
    result = {"state": handle.state, "error": handle.error, "batches": {}}
    if handle.state != "ready":
        return result
    denoiser = Denoiser(model, Precision.FP32, compiled=handle)
    torch.manual_seed(1)
    for batch in (2, 5, 16, 40):
        x, t = torch.randn(batch, 3, 8, 8), torch.linspace(0, 999, batch).long()
        eps, eager = denoiser(x, t), model(x, t)
        result["batches"][batch] = {
            "relative_rms": ((eps - eager).pow(2).mean().sqrt() / eager.pow(2).mean().sqrt()).item(),
            "max_abs": (eps - eager).abs().max().item(),
            "state_after": handle.state,
            "compiled": batch not in handle.unserved,  # else a guard excluded it and eager answered
        }
    result["unserved"] = sorted(handle.unserved)
    result["serves_5"] = handle.serves(torch.zeros(5, 3, 8, 8), Precision.FP32)
    return result


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="torch.compile's CPU backend needs a C++ compiler, and this machine has none (the studio runs eager)",
)
def test_the_real_compiled_forward_equals_the_eager_one(tmp_path):
    """The studio's compiled path, compiled for real (Inductor; ~40 s on 2 cores with an empty cache) at 6 images:
    at 2 and 5 (dynamic batch) the compiled module answers, epsilon within 1e-5 relative RMS and 1e-4 absolute of the
    eager fp32 network's, t at both ends of the chain; at 16 and 40, which the fp32 graph's guards may exclude, the
    answer is still right (eager where excluded) and the path stays compiled for the rest. In a child process:
    Dynamo in the test process made a later Qt test abort (shiboken's error path, "seterror_argument failed to call
    update_mapping"), and its threads would leave OpenMP pools behind (docs/architecture.md, Threading)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "import json; from tests.test_device import _compile_and_compare; print(json.dumps(_compile_and_compare()))"
    env = {**os.environ, "DDPM_COMPILE": "1", "XDG_DATA_HOME": str(tmp_path), "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "ready", result["error"]
    assert result["batches"]["2"]["compiled"] and result["batches"]["5"]["compiled"], result
    for batch, figures in result["batches"].items():
        assert figures["state_after"] == "ready", (batch, result)
        assert figures["relative_rms"] < 1e-5 and figures["max_abs"] < 1e-4, (batch, figures)
    # In fp32 the graph compiled at 6 images holds for 2..15 (ATen's convolution backend changes at 16): those
    # sizes are answered eagerly, and the path stays compiled for the others.
    assert set(result["unserved"]) <= {16, 40} and result["serves_5"]


def test_the_explored_models_bf16_weights_are_converted_once_and_give_autocasts_eps_bit_for_bit():
    """LoadedModel.denoiser() in bf16 evaluates a copy whose convolution and linear weights are bf16 already
    (autocast would cast them on every call): eps identical to autocast over the fp32 weights; the copy is made once
    per precision; the explored model itself stays fp32 (the bound is computed from it)."""
    from engine.loading import BUNDLED_RUN, load_model

    loaded = load_model(BUNDLED_RUN, device="cpu")
    x, t = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 9, 250, 600, 999])
    converted = loaded.denoiser(Precision.BF16)
    assert converted.network is not loaded.model and converted.network is loaded.denoiser(Precision.BF16).network
    assert converted.network.conv_in.weight.dtype == torch.bfloat16
    assert loaded.model.conv_in.weight.dtype == torch.float32
    assert converted.network.norm_out.weight.dtype == torch.float32  # GroupNorm runs in fp32 under autocast
    assert torch.equal(converted(x, t), Denoiser(loaded.model, Precision.BF16)(x, t))
    assert loaded.denoiser(Precision.FP32).network is loaded.model
