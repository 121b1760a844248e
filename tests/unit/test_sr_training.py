"""SR training: the smoke run writes a loadable checkpoint; data and degradations behave."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ecomgen.models.sr import STEP, TINY_CONFIG, SRNet, load_checkpoint, load_networks
from tests.conftest import REPO_ROOT
from training.sr import degrade, downscale, fake_photos, list_photos, load_data, parse, sample_batch


def dry_run(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.sr", "--dataset", "fake", "--dry-run", "--out-dir", str(tmp_path)]
    return subprocess.run([*cmd, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_dry_run_writes_a_loadable_fp16_checkpoint(tmp_path):
    done = dry_run(tmp_path, "--channels", "8", "--blocks", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("sr.safetensors", "sr.json", "sr_samples.png"):
        assert (tmp_path / name).exists(), name
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "sr.safetensors")).values())
    meta = json.loads((tmp_path / "sr.json").read_text())
    assert meta["config"] == TINY_CONFIG and meta["iters"] == 3 and meta["wall_time_s"] > 0
    assert meta["command"].startswith("python -m training.sr") and "--dry-run" in meta["command"]
    assert meta["machine"] and len(meta["l1"]) == 3
    net = load_networks(tmp_path)[STEP]
    assert isinstance(net, SRNet) and not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 16, 12)).shape == (1, 3, 64, 48)
    strip = Image.open(tmp_path / "sr_samples.png")
    assert strip.size == (3 * 192, 4 * 256)  # bicubic | ours | ground truth, 4 rows


def test_dry_run_espcn(tmp_path):
    done = dry_run(tmp_path, "--arch", "espcn", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sr_espcn.safetensors").exists() and not (tmp_path / "sr.safetensors").exists()
    model = load_checkpoint(tmp_path, "sr_espcn")
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3, 64, 64)


def test_dry_run_never_defaults_to_the_shipped_checkpoints():
    assert parse(["--dry-run"]).out_dir == REPO_ROOT / "runs" / "sr_dry_run"
    assert parse([]).out_dir == REPO_ROOT / "checkpoints"


def test_training_reads_only_the_train_split(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 5)):
        for sub in ("image", "cloth"):
            (tmp_path / split / sub).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (256, 192, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / sub / f"{i:06d}_{int(sub == 'cloth')}.jpg")
    train, val, desc = load_data(parse(["--data-dir", str(tmp_path), "--val", "2"]))
    assert len(train) + len(val) == 6 and len(val) == 2  # 3 persons + 3 garments, none from test
    assert "train split" in desc
    assert list_photos(tmp_path, "test")["cloth"][0].parent == tmp_path / "test" / "cloth"


def test_clean_degradation_is_pil_bicubic():
    hr = fake_photos(2)[0]
    rng = np.random.default_rng(0)
    lr = degrade(hr, rng, blur_prob=0.0, jpeg_prob=0.0)
    expected = np.asarray(Image.fromarray(hr).resize((48, 64), Image.Resampling.BICUBIC))
    assert lr.shape == (64, 48, 3) and np.array_equal(lr, expected) and np.array_equal(lr, downscale(hr))


def test_degradations_change_the_input_but_not_the_size():
    hr = fake_photos(2)[0]
    clean = downscale(hr)
    for blur, jpeg in ((1.0, 0.0), (0.0, 1.0)):
        lr = degrade(hr, np.random.default_rng(1), blur_prob=blur, jpeg_prob=jpeg)
        assert lr.shape == clean.shape and not np.array_equal(lr, clean)


@pytest.mark.parametrize("patch", [(16, 16), (48, 40), (64, 48)])
def test_sample_batch_shapes_and_range(patch):
    lr, hr = sample_batch(fake_photos(4), np.random.default_rng(0), 5, patch, 0.5, 0.5)
    assert lr.shape == (5, 3, *patch) and hr.shape == (5, 3, 4 * patch[0], 4 * patch[1])
    assert lr.min() >= -1 and lr.max() <= 1 and hr.min() >= -1 and hr.max() <= 1
