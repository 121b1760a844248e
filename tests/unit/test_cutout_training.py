"""Cut-out training: the dry run writes a loadable checkpoint; it reads only ``train``; composites behave."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ecomgen.models.cutout import INPUT_HW, NETWORK, TINY_CONFIG, CutoutNet, load_networks
from tests.conftest import FIXTURES, REPO_ROOT
from training.cutout import load_data, parse
from training.cutout_data import (
    EVAL_ONLY_KINDS,
    TRAIN_KINDS,
    Backgrounds,
    clean_indices,
    eval_background,
    eval_composite,
    fake_objects,
    fill_holes,
    photo_split,
    procedural,
    training_sample,
)


def viton_train_copy(root: Path) -> Path:
    """The committed fixture garments (from VITON ``test``) laid out as a ``train`` split: training
    must never read a ``test`` folder, so the dry run gets a copy under ``train/``."""
    for sub in ("cloth", "cloth-mask"):
        shutil.copytree(FIXTURES / "viton" / "test" / sub, root / "train" / sub)
    return root


def test_dry_run_writes_a_loadable_fp16_checkpoint(tmp_path):
    data = viton_train_copy(tmp_path / "viton")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "training.cutout", "--dry-run", "--tiny", "--no-photos", "--threads", "1"]
    cmd += ["--data-dir", str(data), "--out-dir", str(out), "--products-dir", str(tmp_path / "none")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("product_cutout.safetensors", "product_cutout.json", "product_cutout_samples.png"):
        assert (out / name).exists(), name
    assert all(v.dtype == torch.float16 for v in load_file(str(out / "product_cutout.safetensors")).values())
    meta = json.loads((out / "product_cutout.json").read_text())
    assert meta["command"].startswith("python -m training.cutout") and "--dry-run" in meta["command"]
    assert meta["iters"] == 3 and meta["wall_time_s"] > 0 and meta["machine"]
    assert meta["config"] == TINY_CONFIG and meta["input_hw"] == list(INPUT_HW)
    assert meta["data"]["pairs"] == 4 and "train" in meta["data"]["objects"]
    assert set(meta["validation"]) == {"iou_white", "mae_white", "iou_textured", "mae_textured"}
    net = load_networks(out)[NETWORK]
    assert isinstance(net, CutoutNet) and not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 3, *INPUT_HW)).shape == (1, 1, *INPUT_HW)
    assert Image.open(out / "product_cutout_samples.png").size[0] == 4 * INPUT_HW[1]


def test_dry_run_never_defaults_to_the_shipped_checkpoints():
    assert parse(["--dry-run"]).out_dir == REPO_ROOT / "runs" / "cutout_dry_run"
    assert parse([]).out_dir == REPO_ROOT / "checkpoints"


def test_training_reads_only_the_train_split(tmp_path):
    data = viton_train_copy(tmp_path)
    # A "test" split with different garments: none of them may show up.
    rng = np.random.default_rng(0)
    for sub in ("cloth", "cloth-mask"):
        (tmp_path / "test" / sub).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (256, 192, 3), dtype=np.uint8)).save(
                tmp_path / "test" / sub / f"9{i}.jpg"
            )
    opt = parse(
        ["--dry-run", "--no-photos", "--data-dir", str(data), "--products-dir", str(tmp_path / "none")]
    )
    objects, raw, _, val, desc = load_data(opt)
    assert objects.names == raw.names == sorted(p.name for p in (FIXTURES / "viton/test/cloth").iterdir())
    assert desc["pairs"] == 4 and desc["objects"].endswith("train cloth + cloth-mask (threshold 128)")
    assert len(val) and not set(val) & set(objects.keep)  # validation garments are not trained on


def test_mask_cleaning():
    ring = np.zeros((64, 48), np.uint8)
    ring[8:56, 8:40] = 255
    ring[20:40, 16:32] = 0  # an enclosed hole (a white logo VITON's threshold missed)
    assert (fill_holes(ring)[20:40, 16:32] == 255).all()
    shredded = np.zeros((64, 48), np.uint8)
    shredded[8:56:4, 8:40] = 255  # thin stripes: far from its convex hull
    assert clean_indices(np.stack([ring, shredded])).tolist() == [0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_samples(seed):
    objects = fake_objects(6, seed=seed)
    backgrounds = Backgrounds(
        [np.full((300, 400, 3), 90, np.uint8)], objects, np.zeros((4, 64, 48, 3), np.uint8)
    )
    rng = np.random.default_rng(seed)
    for _ in range(12):
        img, alpha, source = training_sample(objects, backgrounds, rng, INPUT_HW, raw=objects)
        assert img.shape == (*INPUT_HW, 3) and img.dtype == np.uint8
        assert alpha.shape == INPUT_HW and alpha.dtype == np.float32
        assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() > 0.5
        assert source in {"white", "white-original", "photo", "fabric", "products", *TRAIN_KINDS}


@pytest.mark.parametrize("kind", [*TRAIN_KINDS, *EVAL_ONLY_KINDS])
def test_procedural_kinds(kind):
    bg = procedural(kind, np.random.default_rng(0), (64, 48))
    assert bg.shape == (64, 48, 3) and bg.dtype == np.float32 and bg.min() >= 0 and bg.max() <= 1


def test_eval_backgrounds_are_fixed_and_unseen(tmp_path):
    photo = [np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)]
    a, src_a = eval_background(0, (64, 48), photo)
    b, src_b = eval_background(0, (64, 48), photo)
    assert src_a == src_b == "photo" and np.array_equal(a, b)
    kinds = {eval_background(i, (64, 48), photo)[1] for i in range(1, 40, 2)}
    assert set(EVAL_ONLY_KINDS) <= kinds and not set(EVAL_ONLY_KINDS) & set(TRAIN_KINDS)
    fg, mask = np.zeros((64, 48, 3), np.uint8), np.zeros((64, 48), np.uint8)
    mask[10:50, 10:40] = 255
    assert np.array_equal(eval_composite(fg, mask, a, 0), eval_composite(fg, mask, a, 0))
    # The photo split: every 4th installed photo (sorted by path) is held out for the evaluation.
    names = []
    for i in range(8):
        (tmp_path / f"p{i}.jpg").write_bytes(b"x")
        names.append(str(tmp_path / f"p{i}.jpg"))
    split = photo_split(names)
    assert [p.name for p in split["eval"]] == ["p3.jpg", "p7.jpg"] and len(split["train"]) == 6
