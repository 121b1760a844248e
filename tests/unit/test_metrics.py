"""Unit tests of the product_gan evaluation: Frechet distance, classifier shapes, CLI smoke runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import REPO_ROOT
from training.classifier import (
    FEATURE_DIM,
    NUM_CLASSES,
    ProductClassifier,
    augment,
    features,
    load_classifier,
    logits,
    predict,
    state_fp16,
)
from training.data import fake_products
from training.metrics import (
    balanced_labels,
    baseline_batches,
    class_mean_stats,
    fcd,
    first_per_class,
    frechet_distance,
)


def random_stats(rng: np.random.Generator, d: int = 16, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return x.mean(axis=0), np.cov(x, rowvar=False)


# --- frechet_distance --------------------------------------------------------------


def test_frechet_identical_stats_is_zero() -> None:
    mu, sigma = random_stats(np.random.default_rng(0))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_frechet_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    a, b = random_stats(rng), random_stats(rng)
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-6)


def test_frechet_equal_covariances_is_squared_mean_distance() -> None:
    rng = np.random.default_rng(2)
    mu, sigma = random_stats(rng)
    shift = rng.standard_normal(mu.shape)
    d = frechet_distance(mu, sigma, mu + shift, sigma)
    assert d > 0
    assert d == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_diagonal_closed_form() -> None:
    # Commuting covariances: d^2 = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1.0 + (1 - 2) ** 2 + (2 - 1) ** 2
    d = frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b))
    assert d == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_covariances_are_finite() -> None:
    # Fewer samples than dimensions: rank-deficient covariances, as in the per-class FCD.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.5
    d = fcd(x, y)
    assert np.isfinite(d) and d > 0
    assert fcd(x, x) == pytest.approx(0.0, abs=1e-3)


# --- classifier --------------------------------------------------------------------


def test_classifier_shapes_and_input_layouts() -> None:
    torch.manual_seed(0)
    model = ProductClassifier().eval()
    images, _ = fake_products(6)
    f = features(model, images)
    assert f.shape == (6, FEATURE_DIM) and f.dtype == np.float32
    assert logits(model, images).shape == (6, NUM_CLASSES)
    # uint8 NCHW, uint8 NHWC (the served layout) and float [-1, 1] NCHW agree.
    nhwc = images.permute(0, 2, 3, 1).numpy()
    as_float = images.float().numpy() / 127.5 - 1.0
    np.testing.assert_allclose(features(model, nhwc), f, atol=1e-5)
    np.testing.assert_allclose(features(model, as_float), f, atol=1e-5)
    pred = predict(model, images, batch_size=4)
    assert pred.shape == (6,) and ((pred >= 0) & (pred < NUM_CLASSES)).all()


def test_classifier_checkpoint_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ProductClassifier(width=8).eval()
    path = tmp_path / "clf.safetensors"
    save_file(state_fp16(model), str(path))
    meta = {"width": 8, "feature_dim": FEATURE_DIM, "num_classes": NUM_CLASSES}
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = load_classifier(path)
    images, _ = fake_products(4)
    np.testing.assert_allclose(features(loaded, images), features(model, images), rtol=0.02, atol=0.02)


def test_augment_keeps_shape() -> None:
    x = torch.rand(5, 3, 64, 48)
    assert augment(x, max_shift=4).shape == x.shape
    assert torch.equal(augment(x, max_shift=0).sort(dim=3).values, x.sort(dim=3).values)


# --- metrics helpers ---------------------------------------------------------------


def test_baseline_is_balanced_and_in_range() -> None:
    images, labels = fake_products(40)
    means, stds = class_mean_stats(images, labels)
    assert means.shape == stds.shape == (NUM_CLASSES, 3, 64, 48)
    class_ids = balanced_labels(3)
    batches = list(baseline_batches(means, stds, class_ids, seed=0, batch_size=7))
    x = np.concatenate(batches)
    assert x.shape == (3 * NUM_CLASSES, 3, 64, 48) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(class_ids), np.full(NUM_CLASSES, 3))


def test_first_per_class() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(first_per_class(labels, 2), [1, 1, 0, 1, 1, 1])


# --- CLI smoke runs ------------------------------------------------------------------


def run_module(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_classifier_dry_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "product_classifier.safetensors"
    run_module("training.classifier", "--dataset", "fake", "--dry-run", "--checkpoint", str(ckpt))
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["epochs"] == 1 and 0.0 <= meta["heldout_accuracy"] <= 1.0
    assert load_classifier(ckpt).feature_dim == FEATURE_DIM


def test_metrics_dry_run(tmp_path: Path) -> None:
    run_module("training.metrics", "--dry-run", "--out-dir", str(tmp_path))
    report = (tmp_path / "product_gan_eval.md").read_text()
    for needle in ("(a) conditional accuracy", "(b) FCD", "(c) FCD floor", "(d) FCD baseline", "## Commands"):
        assert needle in report
    assert (tmp_path / "product_gan_eval.png").stat().st_size > 0
