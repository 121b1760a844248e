"""Smoke runs of the training scripts (a few steps on fake data) and model invariants."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from ecomgen.models.product_gan import ConditionalBatchNorm2d, Discriminator, Generator
from tests.conftest import REPO_ROOT
from training.product_gan import diff_augment, ema_avg_fn, recalibrate_batchnorm


def test_product_gan_dry_run(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "training.product_gan",
        "--dataset",
        "fake",
        "--dry-run",
        "--ngf",
        "8",
        "--ndf",
        "8",
    ]
    cmd += ["--out", str(tmp_path), "--checkpoint", str(tmp_path / "g.safetensors")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "samples_final.png").exists()
    assert not (tmp_path / "g.safetensors").exists(), "a dry run must not write a checkpoint"


def test_shapes_and_range(torch_threads):
    g, d = Generator(ngf=8), Discriminator(ndf=8)
    z, y = torch.randn(4, 128), torch.eye(10)[[0, 3, 3, 9]]
    x = g(z, y)
    assert x.shape == (4, 3, 64, 48) and float(x.abs().max()) <= 1.0
    assert d(x, y).shape == (4,)
    assert diff_augment(x).shape == x.shape


def test_class_changes_the_image_in_eval_mode(torch_threads):
    g = Generator(ngf=8)
    for m in g.modules():
        if isinstance(m, ConditionalBatchNorm2d):  # at init every class has scale 1, shift 0
            torch.nn.init.normal_(m.beta.weight, std=0.5)
    recalibrate_batchnorm(g, batches=2, batch_size=8)
    z = torch.randn(1, 128).repeat(2, 1)
    with torch.no_grad():
        a, b = g(z, torch.eye(10)[[1, 1]]), g(z, torch.eye(10)[[1, 2]])
    assert torch.equal(a[0], a[1]) and not torch.allclose(b[0], b[1])


def test_recalibration_gives_eval_mode_batch_independence(torch_threads):
    g = Generator(ngf=8)
    recalibrate_batchnorm(g, batches=2, batch_size=8)
    assert not g.training
    z, y = torch.randn(5, 128), torch.eye(10)[[0, 1, 2, 3, 4]]
    with torch.no_grad():
        batch = g(z, y).numpy()
        alone = np.concatenate([g(z[i : i + 1], y[i : i + 1]).numpy() for i in range(5)])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_ema_follows_the_generator_early_then_averages():
    from torch.optim.swa_utils import AveragedModel

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = AveragedModel(net, avg_fn=ema_avg_fn(0.999), use_buffers=True)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update_parameters(net)  # first update copies (AveragedModel's n == 0)
    ema.update_parameters(net)  # second: decay (1+1)/(10+1)
    assert float(ema.module.weight) == 1.0
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema.update_parameters(net)
    decay = 3 / 12
    assert abs(float(ema.module.weight) - decay) < 1e-6
