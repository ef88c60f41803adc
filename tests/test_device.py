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


def _wait_while_compiling(handle, seconds: float = 900.0) -> None:
    deadline = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if handle.state != "compiling":
            return
        deadline.wait(0.05)


def test_the_compiled_forward_is_built_in_the_background_and_used_only_where_it_serves(monkeypatch):
    """engine.compiled: the compile runs in a child process waited on from a thread of its own (the eager network
    answers meanwhile); once loaded, the denoiser calls it for batches of two or more of its shape, precision and
    thread count, with no autocast around it (it autocasts inside), its first answer checked against the eager
    network's, and eager for the rest; a call its guards exclude is answered eagerly, and so is its batch size from
    then on; any other failure turns the compiled path off. A second load finds the compiled function in the cache
    folder and compiles nothing. The child process and torch's loader are replaced by recording stand-ins (the real
    ones are tested below)."""
    from engine import compiled

    release, calls, builds = threading.Event(), [], []

    def compile_in_child(spec, path, cancelled=None):
        builds.append(spec)
        release.wait(5)  # the "compile": blocks the waiting thread, not the caller's
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"compiled")

    def function(wrapper, x, t):
        assert not torch.is_autocast_enabled("cpu")  # the function's guards check that global state
        calls.append(x.shape[0])
        if x.shape[0] == 3:
            raise RuntimeError(compiled.GUARD_REFUSED + ", reason: batch size")
        if x.shape[0] == 5:
            raise RuntimeError("something else broke")
        return wrapper(x, t)

    monkeypatch.setattr(compiled, "compile_in_child", compile_in_child)
    monkeypatch.setattr(compiled, "_load", lambda path: function)
    config = PRESETS["micro"].unet
    model = _trained_looking_micro().requires_grad_(False)
    eager_eps = torch.no_grad()(model)  # as the denoiser runs it (SDPA picks its kernel by grad mode)
    handle = compiled.start(model, config, Precision.FP32)
    denoiser = Denoiser(model, Precision.FP32, compiled=handle)
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 5)
    eager = eager_eps(x, t)
    assert handle.state == "compiling" and torch.equal(denoiser(x, t), eager) and calls == []  # eager meanwhile
    release.set()
    _wait_while_compiling(handle)
    assert handle.state == "ready" and not handle.cached and not handle.checked and calls == []
    assert builds[0]["precision"] == "fp32" and builds[0]["threads"] == torch.get_num_threads()
    assert torch.equal(denoiser(x, t), eager) and calls == [4]  # compiled now
    assert handle.checked  # its first answer, against the eager network's
    assert torch.equal(denoiser(x[:1], t[:1]), eager_eps(x[:1], t[:1])) and calls == [4]  # a batch of one: eager
    bf16 = Denoiser(model, Precision.BF16, compiled=handle)
    assert torch.equal(bf16(x, t), Denoiser(model, Precision.BF16)(x, t)) and calls == [4]  # another precision
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # another thread count: a guard would refuse it, so eager answers
    try:
        assert torch.allclose(denoiser(x, t), eager, atol=1e-5) and calls == [4]  # (2 threads: another order)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(denoiser(x[:3], t[:3]), eager_eps(x[:3], t[:3]))  # a guard excludes 3 images: eager answers
    assert handle.state == "ready" and handle.unserved == {3}  # ... for that batch size only
    assert torch.equal(denoiser(x[:3], t[:3]), eager_eps(x[:3], t[:3])) and calls == [4, 3]  # not tried again
    assert torch.equal(denoiser(x, t), eager) and calls == [4, 3, 4]  # other sizes stay compiled
    x5, t5 = torch.randn(5, 3, 8, 8), torch.full((5,), 5)
    assert torch.equal(denoiser(x5, t5), eager_eps(x5, t5))  # any other failure: eager answers ...
    assert handle.state == "failed" and "something else broke" in handle.error  # ... and from now on
    assert torch.equal(denoiser(x, t), eager) and calls == [4, 3, 4, 5]
    assert not handle.path.exists()  # a function that broke goes: the next launch compiles afresh

    again = compiled.start(model, config, Precision.FP32)
    _wait_while_compiling(again)
    assert again.state == "ready" and not again.cached and again.path == handle.path and len(builds) == 2
    third = compiled.start(model, config, Precision.FP32)  # the next launch: loaded from the cache folder
    _wait_while_compiling(third)
    assert third.state == "ready" and third.cached and len(builds) == 2
    other = compiled.start(model, config, Precision.FP32, threads=threads + 1)  # another thread count: another file
    _wait_while_compiling(other)
    assert other.path != handle.path and len(builds) == 3


def test_a_compiled_function_that_disagrees_with_the_eager_network_never_serves(monkeypatch):
    """A stale or wrong compiled function (here: eps off by 1%) fails the check of its first answer against the
    eager network's: the path is off, with the measured difference as the reason, the eager network answers, and
    the file goes (the next launch compiles afresh); so does a file that cannot be loaded."""
    from engine import compiled

    def compile_in_child(spec, path, cancelled=None):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"compiled")

    monkeypatch.setattr(compiled, "compile_in_child", compile_in_child)
    monkeypatch.setattr(compiled, "_load", lambda path: lambda wrapper, x, t: wrapper(x, t) * 1.01)
    model = _trained_looking_micro().requires_grad_(False)
    handle = compiled.start(model, PRESETS["micro"].unet, Precision.FP32)
    _wait_while_compiling(handle)
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 5)
    with torch.no_grad():
        assert torch.equal(Denoiser(model, Precision.FP32, compiled=handle)(x, t), model(x, t))
    assert handle.state == "failed" and "differs from the eager one by 1.00e-02" in handle.error
    assert not handle.path.exists()

    def unreadable(path):
        raise EOFError("Ran out of input")

    monkeypatch.setattr(compiled, "_load", unreadable)
    handle = compiled.start(model, PRESETS["micro"].unet, Precision.FP32)
    _wait_while_compiling(handle)
    assert handle.state == "failed" and handle.error == "EOFError: Ran out of input" and not handle.path.exists()


def test_compiling_is_off_where_it_cannot_pay(monkeypatch):
    """On by default; off with DDPM_COMPILE=0, on MPS, without a C++ compiler (Inductor's CPU backend; on CUDA a C
    compiler, Triton's), and on a CPU for models whose eager evaluation of one image takes over 12 ms (`small`,
    21-23 ms here, ran as fast eager as compiled; the bundled tiny model, 6.4-6.8 ms, ~1.3x faster compiled)."""
    from engine.compiled import compile_available

    cpu = torch.device("cpu")
    monkeypatch.setenv("DDPM_COMPILE", "0")
    assert compile_available(cpu) == "compiling is off (DDPM_COMPILE=0)"
    monkeypatch.delenv("DDPM_COMPILE")  # on by default, where it can pay
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}" if name in ("g++", "gcc") else None)
    assert compile_available(cpu) is None
    assert compile_available(cpu, 0.0066) is None
    assert compile_available(cpu, 0.022) == "on this CPU a model this size (22 ms per image) runs as fast uncompiled"
    assert compile_available(torch.device("cuda"), 0.022) is None  # a GPU runs these models overhead-bound
    assert compile_available(torch.device("mps")) == "no compiled path for mps"
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert "no C++ compiler" in compile_available(cpu)
    assert "no C compiler (Triton" in compile_available(torch.device("cuda"))


def test_the_studio_counts_as_busy_when_it_used_over_30_percent_of_a_core():
    from engine.compile_child import Activity

    clock, cpu = [0.0], [0.0]
    activity = Activity(clock=lambda: clock[0], cpu=lambda: cpu[0])
    for used, busy in ((0.05, False), (0.2, True), (0.07, False), (0.5, True)):  # CPU seconds per 0.25 s tick
        clock[0] += 0.25
        cpu[0] += used
        assert activity.busy() is busy, used


@pytest.mark.skipif(not hasattr(__import__("os"), "killpg"), reason="pausing needs POSIX process groups")
def test_the_compiling_process_is_paused_while_the_studio_is_busy_and_killed_when_cancelled(monkeypatch, tmp_path):
    """engine.compile_child.compile_in_child with a stand-in child (it counts, one every 20 ms, to 60, then writes its
    output): while the studio's process is busy the child's process group is stopped (its count does not move); once
    idle again the child runs to the end. Cancelled, the child is killed and nothing is written. A child that fails
    raises with its last line."""
    import time

    from engine import compile_child

    child = (
        "import pathlib, sys, time\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "for i in range(60):\n"
        "    out.with_suffix('.count').write_text(str(i)); time.sleep(0.02)\n"
        "out.write_bytes(b'compiled')\n"
    )
    busy = threading.Event()

    class Scripted:
        def busy(self):
            return busy.is_set()

    def wait_for(condition, seconds=20.0):
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert condition()

    monkeypatch.setattr(compile_child, "CHILD", child)
    monkeypatch.setattr(compile_child, "Activity", Scripted)
    out = tmp_path / "f.compiled"
    count = out.with_suffix(".count")
    done = threading.Thread(target=compile_child.compile_in_child, args=({}, out))
    done.start()
    wait_for(lambda: count.exists() and count.read_text() not in ("", "0"))  # it runs while the studio is idle
    busy.set()
    time.sleep(3 * compile_child.TICK_S)  # stopped within a tick
    paused_at = count.read_text()
    time.sleep(0.6)
    assert count.read_text() == paused_at and int(paused_at) < 59 and not out.exists()  # no progress while busy
    busy.clear()
    done.join(20)
    assert out.read_bytes() == b"compiled" and count.read_text() == "59"  # finished once idle

    cancelled, failure = threading.Event(), []
    out = tmp_path / "g.compiled"

    def run():
        try:
            compile_child.compile_in_child({}, out, cancelled)
        except RuntimeError as e:
            failure.append(str(e))

    done = threading.Thread(target=run)
    done.start()
    wait_for(lambda: out.with_suffix(".count").exists())
    cancelled.set()
    done.join(20)
    assert failure == ["cancelled"] and not out.exists() and not compile_child._children
    time.sleep(0.3)
    assert not out.exists()  # killed: it never finished

    monkeypatch.setattr(
        compile_child, "CHILD", "import sys; print('warming up', file=sys.stderr); sys.exit('g++ broke')"
    )
    with pytest.raises(RuntimeError, match="^g\\+\\+ broke$"):
        compile_child.compile_in_child({}, tmp_path / "h.compiled")


def _compile_and_compare() -> dict:
    """Compiled for real through engine.compiled, both at once: the micro model in fp32 against its eager fp32
    forward, and the bundled model in bf16 (as the studio explores it) against its eager fp32 forward, eps and a
    short chain (run in a child process by the test below)."""
    import numpy as np

    from engine import compiled
    from engine.images import to_uint8
    from engine.loading import BUNDLED_RUN, load_model
    from engine.sampling import generate

    assert compiled.compile_available(torch.device("cpu")) is None
    micro = _trained_looking_micro().requires_grad_(False)
    bundled = load_model(BUNDLED_RUN, device="cpu")
    bf16 = bundled.denoiser(Precision.BF16)
    handles = {
        "fp32": compiled.start(micro, PRESETS["micro"].unet, Precision.FP32),
        "bf16": compiled.start(bf16.network, bundled.unet_config, Precision.BF16),
    }
    for handle in handles.values():
        _wait_while_compiling(handle)
    result = {name: {"state": h.state, "error": h.error, "batches": {}} for name, h in handles.items()}
    if any(h.state != "ready" for h in handles.values()):
        return result
    handle = handles["fp32"]
    denoiser = Denoiser(micro, Precision.FP32, compiled=handle)
    torch.manual_seed(1)
    for batch in (2, 5, 16, 40):
        x, t = torch.randn(batch, 3, 8, 8), torch.linspace(0, 999, batch).long()
        eps, eager = denoiser(x, t), micro(x, t)
        result["fp32"]["batches"][batch] = {
            "relative_rms": ((eps - eager).pow(2).mean().sqrt() / eager.pow(2).mean().sqrt()).item(),
            "max_abs": (eps - eager).abs().max().item(),
            "state_after": handle.state,
            "compiled": batch not in handle.unserved,  # else a guard excluded it and eager answered
        }
    result["fp32"]["unserved"] = sorted(handle.unserved)
    result["fp32"]["serves_5"] = handle.serves(torch.zeros(5, 3, 8, 8), Precision.FP32)

    handle = handles["bf16"]
    bundled.compiled = handle
    fast, fp32 = bundled.denoiser(Precision.BF16), bundled.denoiser(Precision.FP32)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for t in (1, 100, 500, 999):
        index = torch.full((16,), t)
        eps, eager = fast(x, index), fp32(x, index)
        result["bf16"]["batches"][t] = {
            "relative_rms": ((eps - eager).pow(2).mean().sqrt() / eager.pow(2).mean().sqrt()).item(),
            "max_abs": (eps - eager).abs().max().item(),
        }
    samples = {}
    for name, model in (("compiled", fast), ("fp32", fp32)):
        steps = generate(model, bundled.diffusion, (64, 3, 16, 16), torch.Generator().manual_seed(3), num_steps=50)
        samples[name] = to_uint8(list(steps)[-1].x_t).astype(int)
    result["bf16"]["samples_mean_abs"] = float(np.abs(samples["compiled"] - samples["fp32"]).mean())
    result["bf16"]["state_after"], result["bf16"]["unserved"] = handle.state, sorted(handle.unserved)
    return result


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="torch.compile's CPU backend needs a C++ compiler, and this machine has none (the studio runs eager)",
)
def test_the_real_compiled_forward_equals_the_eager_one(tmp_path):
    """The studio's compiled path, compiled for real (two child processes at once, ~75 s on 2 cores, empty cache),
    traced at 6 images. fp32, the micro model: at 2 and 5 (dynamic batch) the compiled function answers, epsilon
    within 1e-5 relative RMS and 1e-4 absolute of the eager fp32 network's, t at both ends of the chain; at 16 and
    40, which the fp32 graph's guards may exclude, the answer is still right (eager where excluded) and the path
    stays compiled for the rest. bf16, the bundled model as the studio explores it: within the tolerance the eager
    bf16 path has of fp32 (1% relative RMS, 0.1 absolute; measured compiled 0.31%, 0.031, eager 0.4%, 0.035), and 64
    samples of a 50-step chain within 2/255 of fp32's on average (measured compiled 0.56/255, eager 0.6/255). In a
    child process: Dynamo in the test process made a later Qt test abort (shiboken's error path), and its threads
    would leave OpenMP pools behind."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "import json; from tests.test_device import _compile_and_compare; print(json.dumps(_compile_and_compare()))"
    env = {**os.environ, "DDPM_COMPILE": "1", "XDG_DATA_HOME": str(tmp_path), "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("fp32", "bf16"):
        assert result[name]["state"] == "ready", (name, result[name]["error"])
    fp32 = result["fp32"]
    assert fp32["batches"]["2"]["compiled"] and fp32["batches"]["5"]["compiled"], fp32
    for batch, figures in fp32["batches"].items():
        assert figures["state_after"] == "ready", (batch, fp32)
        assert figures["relative_rms"] < 1e-5 and figures["max_abs"] < 1e-4, (batch, figures)
    # In fp32 the graph traced at 6 images holds for 2..15 (ATen's convolution backend changes at 16): those
    # sizes are answered eagerly, and the path stays compiled for the others.
    assert set(fp32["unserved"]) <= {16, 40} and fp32["serves_5"]
    bf16 = result["bf16"]
    assert bf16["state_after"] == "ready" and bf16["unserved"] == [], bf16  # every eps above came compiled
    for t, figures in bf16["batches"].items():
        assert figures["relative_rms"] < 0.01 and figures["max_abs"] < 0.1, (t, figures)
    assert bf16["samples_mean_abs"] < 2.0, bf16


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_replay_the_eager_forward_and_fall_back_on_failure(monkeypatch):
    """On CUDA the denoiser replays a captured graph per input shape: eps equal to the eager network's (fp32: 1e-5
    relative; bf16 within its tolerance of fp32), one graph per shape, at most MAX kept (least recently used out);
    a capture that fails turns graphs off for good and the eager network answers."""
    from engine.device import CudaGraphs

    model = _trained_looking_micro().cuda().requires_grad_(False)
    x, t = torch.randn(4, 3, 8, 8, device="cuda"), torch.tensor([0, 10, 50, 99], device="cuda")
    eager = Denoiser(model, Precision.FP32)
    eager.graphs = None  # the eager network alone
    want = eager(x, t)
    graphed = Denoiser(model, Precision.FP32)
    assert isinstance(graphed.graphs, CudaGraphs)
    for _ in range(3):  # captured once, then replayed with new inputs
        got = graphed(x, t)
        assert ((got - want).norm() / want.norm()).item() < 1e-5
    x2 = torch.randn(4, 3, 8, 8, device="cuda")
    kept = got.clone()
    assert torch.allclose(graphed(x2, t), eager(x2, t), rtol=1e-4, atol=1e-5)  # the replay reads this call's input
    assert torch.equal(got, kept)  # an earlier answer is the caller's own copy, not the graph's output buffer
    assert len(graphed.graphs.graphs) == 1 and not graphed.graphs.failed
    for batch in (2, 3, 5, 6, 7):
        xb, tb = torch.randn(batch, 3, 8, 8, device="cuda"), torch.full((batch,), 7, device="cuda")
        assert torch.allclose(graphed(xb, tb), eager(xb, tb), rtol=1e-4, atol=1e-5)
    assert len(graphed.graphs.graphs) == CudaGraphs.MAX
    bf16 = Denoiser(model, Precision.BF16)
    assert ((bf16(x, t) - want).norm() / want.norm()).item() < 0.05 and not bf16.graphs.failed

    def broken(*args, **kwargs):
        raise RuntimeError("capture failed")

    monkeypatch.setattr(torch.cuda, "graph", broken)
    fresh = Denoiser(model, Precision.FP32)
    assert torch.allclose(fresh(x, t), want, rtol=1e-4, atol=1e-5)  # eager answered
    assert fresh.graphs.failed == "RuntimeError: capture failed"
    assert torch.allclose(fresh(x, t), want, rtol=1e-4, atol=1e-5) and not fresh.graphs.graphs  # eager from now on
