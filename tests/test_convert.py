"""Models in diffusers' format, in and out: the same network tensor for tensor, configs we cannot represent refused
with the field, nothing unpickled, and (where diffusers is installed) the same epsilon as diffusers' UNet2DModel."""

import dataclasses
import json
import pickle

import pytest
import torch

from engine import convert
from engine.config import PRESETS, VarianceType
from engine.unet import UNet


def _random_unet(name: str) -> UNet:
    """A preset's U-Net with every weight random (zero-initialised layers would hide a wrong mapping)."""
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(PRESETS[name].unet, dropout=0.0)).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return model


def _eps(model, x, t):
    with torch.no_grad():
        return model(x, t)


@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_a_written_folder_reads_back_tensor_for_tensor(tmp_path, name):
    model = _random_unet(name)
    diffusion = PRESETS[name].diffusion
    convert.write_diffusers(tmp_path / "pipe", model.config, diffusion, model.state_dict(), "card")
    back = convert.read_diffusers(tmp_path / "pipe")
    assert back.unet == model.config and back.diffusion == dataclasses.replace(diffusion)
    assert back.state.keys() == model.state_dict().keys()
    assert all(torch.equal(back.state[k], v) for k, v in model.state_dict().items())
    assert back.source["format"] == "diffusers" and len(back.source["sha256"]) == 64 and "/" not in back.source["file"]


def test_legacy_attention_names_in_a_plain_bin_load_and_a_pickled_object_is_refused(tmp_path):
    """The old query/key/value/proj_attn names, in a .bin that torch.save wrote from a plain dict of tensors."""
    model = _random_unet("tiny")
    theirs = convert.state_to_diffusers(model.state_dict(), model.config)
    legacy = {}
    for key, tensor in theirs.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = tensor
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(convert.unet_config_to_diffusers(model.config)))
    torch.save(legacy, folder / "diffusion_pytorch_model.bin")
    back = convert.read_diffusers(folder)
    assert all(torch.equal(back.state[k], v) for k, v in model.state_dict().items())

    class Payload:  # anything but tensors in plain containers must never be unpickled
        def __reduce__(self):
            return (print, ("unpickled!",))

    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"conv_in.weight": Payload()}))
    with pytest.raises(convert.ConvertError, match="refused"):
        convert.read_diffusers(folder)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"act_fn": "gelu"}, "act_fn"),
        ({"flip_sin_to_cos": True}, "flip_sin_to_cos"),
        ({"up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"]}, "up_block_types"),
        ({"attention_head_dim": 8}, "attention_head_dim"),
        ({"downsample_padding": 1}, "downsample_padding"),
        ({"cross_attention_dim": 512}, "cross_attention_dim"),
        ({"out_channels": 6}, "out_channels"),
    ],
)
def test_a_config_we_cannot_represent_is_refused_with_its_field(change, field):
    config = convert.unet_config_to_diffusers(PRESETS["tiny"].unet)
    with pytest.raises(convert.ConvertError, match=f"config.json: {field} = "):
        convert.unet_config_from_diffusers({**config, **change})


def test_the_scheduler_config_is_read_exactly_or_refused():
    read = convert.diffusion_config_from_scheduler(
        {
            "num_train_timesteps": 1000,
            "beta_schedule": "linear",
            "beta_start": 1e-4,
            "beta_end": 0.02,
            "variance_type": "fixed_small",
            "clip_sample": False,
        }
    )
    assert read.variance is VarianceType.FIXED_SMALL and not read.clip_denoised and read.num_timesteps == 1000
    for bad in (
        {"beta_schedule": "scaled_linear"},
        {"prediction_type": "v_prediction"},
        {"variance_type": "learned_range"},
        {"trained_betas": [0.1]},
    ):
        with pytest.raises(convert.ConvertError, match="scheduler_config.json"):
            convert.diffusion_config_from_scheduler(bad)


def test_import_explore_export_from_the_command_line(tmp_path, capsys):
    """`ddpm import` makes a run that samples and exports like any other, refuses to be trained further, and a
    failed import leaves nothing behind."""
    from engine.__main__ import main

    model = _random_unet("micro")
    convert.write_diffusers(tmp_path / "pipe", model.config, PRESETS["micro"].diffusion, model.state_dict(), "")
    assert main(["import", str(tmp_path / "pipe"), "--run", str(tmp_path / "imported")]) == 0
    assert (
        main(
            [
                "sample",
                "--run",
                str(tmp_path / "imported"),
                "--n",
                "2",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    assert main(["export", "--run", str(tmp_path / "imported"), "--out", str(tmp_path / "again")]) == 0
    again = convert.read_diffusers(tmp_path / "again")
    assert all(torch.equal(again.state[k], v) for k, v in model.state_dict().items())
    assert "imported from" in (tmp_path / "again" / "README.md").read_text()
    capsys.readouterr()
    assert main(["train", "--run", str(tmp_path / "imported"), "--steps", "5"]) == 2
    assert "imported model" in capsys.readouterr().err

    config = json.loads((tmp_path / "pipe" / "unet" / "config.json").read_text())
    (tmp_path / "pipe" / "unet" / "config.json").write_text(json.dumps({**config, "act_fn": "gelu"}))
    assert main(["import", str(tmp_path / "pipe"), "--run", str(tmp_path / "refused")]) == 2
    assert "act_fn" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))


@pytest.mark.parametrize("name", ["tiny", "cifar10", "celebahq256"])
def test_the_same_epsilon_as_diffusers_unet2dmodel(tmp_path, name):
    """diffusers' UNet2DModel with random weights, saved by diffusers, imported here: epsilon equal to 1e-4 at
    several t; and our export loads back into diffusers as the same network. For the paper's 256x256 config (114M
    parameters, six levels, attention at 16x16) one image per t and no round trip keep it to half a minute."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers (the bench extra) is the reference")
    config = convert.unet_config_to_diffusers(dataclasses.replace(PRESETS[name].unet, dropout=0.0))
    torch.manual_seed(1)
    reference = diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    reference.save_pretrained(tmp_path / "unet")
    imported = convert.read_diffusers(tmp_path / "unet")
    ours = UNet(imported.unet).eval()
    ours.load_state_dict(imported.state)
    n = 1 if imported.unet.image_size[0] > 64 else 2
    shape = (n, imported.unet.in_channels, *imported.unet.image_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    for t in ([0, 1], [250, 999]):
        t = torch.tensor(t[:n])
        with torch.no_grad():
            expected = reference(x, t).sample
        assert (_eps(ours, x, t) - expected).abs().max() < 1e-4
    if n == 1:
        return  # the export's round trip is the same code for every config: proven on the smaller two
    convert.write_diffusers(tmp_path / "out", imported.unet, imported.diffusion, ours.state_dict(), "")
    back = diffusers.UNet2DModel.from_pretrained(tmp_path / "out" / "unet").eval()
    t = torch.tensor([10, 500][:n])
    with torch.no_grad():
        assert (back(x, t).sample - reference(x, t).sample).abs().max() < 1e-6


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_one_reverse_step_equals_the_imported_schedulers(variance):
    """The diffusion config read from a DDPMScheduler config steps exactly like DDPMScheduler.step (same eps, same
    noise), for both of the paper's variances, with x^0 clipped."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers (the bench extra) is the reference")
    from engine.diffusion import GaussianDiffusion

    scheduler_config = {
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "variance_type": variance,
        "clip_sample": True,
    }
    scheduler = diffusers.DDPMScheduler(**scheduler_config)
    ours = GaussianDiffusion(convert.diffusion_config_from_scheduler(scheduler_config), "cpu")
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    for t in (999, 500, 1, 0):
        expected = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t)) if t > 0 else None
        got, _ = ours.p_sample(eps, x_t, torch.full((2,), t), noise, clip_denoised=True)
        # diffusers builds its schedule in float32, ours in float64 (the paper's code does too): at t = 1 that
        # rounding shows as ~5e-5 in x_{t-1}
        assert (got - expected).abs().max() < 1e-4, (t, float((got - expected).abs().max()))


def test_a_checkpoint_with_the_papers_original_names_imports(tmp_path, capsys):
    """pesser/pytorch_diffusion's names (temb.dense, down.i.block.j, mid.block_1, up.i by level, q/k/v/proj_out as
    1x1 convs) in a torch.save'd state dict: the U-Net is read off the tensors (the image size from the 16x16
    attention level), the paper's diffusion settings apply, and the weights are ours tensor for tensor."""
    from engine.__main__ import main
    from engine.config import DiffusionConfig
    from engine.loading import load_model

    config = dataclasses.replace(PRESETS["tiny"].unet, attention_resolutions=(16,), dropout=0.0)  # 16x16 at level 0
    torch.manual_seed(0)
    model = UNet(config).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    torch.save(convert.state_to_original(model.state_dict(), config), tmp_path / "model-790000.ckpt")
    read = convert.read_model(tmp_path / "model-790000.ckpt")
    assert read.unet == config and read.diffusion == DiffusionConfig() and read.source["file"] == "model-790000.ckpt"
    assert all(torch.equal(read.state[k], v) for k, v in model.state_dict().items())
    assert main(["import", str(tmp_path / "model-790000.ckpt"), "--run", str(tmp_path / "paper")]) == 0
    loaded = load_model(tmp_path / "paper")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 900])
    assert torch.equal(_eps(loaded.model, x, t), _eps(model, x, t))
    capsys.readouterr()
    assert main(["import", str(tmp_path / "model-790000.ckpt"), "--run", str(tmp_path / "x"), "--image-size", "3"]) == 2
    assert "--image-size must be in 8..1024" in capsys.readouterr().err
