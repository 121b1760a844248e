"""training.vae: the dry run, its outputs (checkpoint, record, catalogue index), losses and the split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from ecomgen.models.vae import load_networks
from ecomgen.serving.aggregate import load_catalogue
from tests.conftest import REPO_ROOT
from training import vae as train_vae
from training.data import is_heldout


def test_dry_run_on_fake_data_writes_everything_to_out_dir(tmp_path):
    shipped = sorted(p.stat().st_mtime_ns for p in (REPO_ROOT / "checkpoints").glob("personalize_*"))
    cmd = [sys.executable, "-m", "training.vae", "--dry-run", "--dataset", "fake", "--out-dir", str(tmp_path)]
    cmd += ["--width", "4", "--latent-dim", "8"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (
        "personalize_vae.safetensors",
        "personalize_vae.json",
        "personalize_vae_samples.png",
        "personalize_catalogue.safetensors",
    ):
        assert (tmp_path / name).exists(), name
    record = json.loads((tmp_path / "personalize_vae.json").read_text())
    assert record["command"].startswith("python -m training.vae --dry-run")
    assert record["data"].startswith("fake")
    assert record["wall_time_s"] >= 0 and record["machine"]["cpu"]
    assert record["losses"] and {"l1", "ssim", "kl", "beta"} <= set(record["losses"][-1])
    nets = load_networks(tmp_path)
    assert nets["personalize_decoder"].latent_dim == 8
    cat = load_catalogue(tmp_path / "personalize_catalogue.safetensors")
    assert cat.latents.shape == (64, 8) and cat.ids.dtype == np.int64 and cat.class_ids.dtype == np.int32
    assert len(cat.class_names) == 10 and cat.metadata["split"] == "train"
    # The shipped checkpoints are untouched.
    assert sorted(p.stat().st_mtime_ns for p in (REPO_ROOT / "checkpoints").glob("personalize_*")) == shipped


def test_catalogue_index_holds_the_encoder_means_of_the_train_split(
    tmp_path, fixture_products, torch_threads
):
    train = train_vae.load_split(fixture_products, "train", progress=False)
    held = train_vae.load_split(fixture_products, "heldout", progress=False)
    assert len(train) + len(held) == 11
    assert not any(is_heldout(str(i)) for i in train.ids)  # the index never holds held-out photos
    assert all(is_heldout(str(i)) for i in held.ids)
    torch.manual_seed(0)
    vae = train_vae.VAE(latent_dim=8, width=4).eval()
    path = tmp_path / "cat.safetensors"
    prior = train_vae.build_catalogue(vae, train, path, {"data": "fixtures"})
    cat = load_catalogue(path)
    mu, _ = train_vae.encode(vae, train.images)
    np.testing.assert_allclose(cat.latents, mu, atol=1e-2, rtol=1e-2)  # fp16 storage
    np.testing.assert_array_equal(cat.ids, train.ids)
    np.testing.assert_array_equal(cat.class_ids, train.labels.numpy())
    np.testing.assert_array_equal(cat.nearest(mu, 1)[:, 0], train.ids)  # each photo finds itself
    assert prior["prior_means"].shape == (10, 8) and abs(float(prior["prior_weights"].sum()) - 1) < 1e-6


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 5)
    assert torch.allclose(train_vae.kl_per_image(zeros, zeros), torch.zeros(3))
    kl = train_vae.kl_per_image(torch.ones(1, 5), torch.full((1, 5), -1.0))
    expected = 0.5 * 5 * (1 + np.exp(-1) - 1 + 1)
    assert abs(float(kl) - expected) < 1e-5


def test_reconstruction_losses_rank_a_copy_best():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    for kind in ("l1ssim", "mse"):
        assert float(train_vae.reconstruction_loss(x, x, kind, 1.0)) < 1e-5
        assert float(train_vae.reconstruction_loss(noisy, x, kind, 1.0)) > 0.01


def test_two_stage_prior_samples_follow_the_class_gaussians():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    latents = rng.normal(size=(2000, 3)) * 0.1 + labels[:, None]
    prior = train_vae.fit_class_gaussians(latents, labels, 10)
    np.testing.assert_allclose(prior["prior_means"][:, 0], np.arange(10), atol=0.03)
    z = train_vae.sample_two_stage(prior, 5000, seed=1)
    np.testing.assert_array_equal(z, train_vae.sample_two_stage(prior, 5000, seed=1))
    # Every sample lies near one of the class means.
    assert np.abs(z[:, 0] - np.round(z[:, 0])).max() < 0.6


def test_eval_dry_run_writes_the_report(tmp_path):
    cmd = [sys.executable, "-m", "training.vae_eval", "--dry-run", "--out-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    md = (tmp_path / "personalize_eval.md").read_text()
    for heading in ("## Reconstruction and samples", "## Interpolation", "## Personalisation"):
        assert heading in md
    assert "mean history image" in md and "random catalogue photo of the majority type" in md
    assert (tmp_path / "personalize_eval.png").stat().st_size > 1000


def test_dominant_colour_ignores_the_white_background():
    from training.vae_eval import dominant_colour, srgb_to_lab

    img = np.full((1, 64, 48, 3), 255, np.uint8)
    img[0, 20:40, 10:30] = (200, 30, 30)  # a red product on white
    lab = dominant_colour(img)[0]
    np.testing.assert_allclose(lab, srgb_to_lab(np.array([200, 30, 30]))[()], atol=1e-6)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=0.05)
