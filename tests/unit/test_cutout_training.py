"""Cut-out training: the dry run writes a loadable checkpoint; it reads only ``train`` (VITON) and
the train ids (Fashion Product photos); masks derived from plain backdrops; composites behave;
other products' photos are never a background."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ecomgen.models.cutout import INPUT_HW, NETWORK, TINY_CONFIG, CutoutNet, load_networks
from tests.conftest import FIXTURES, REPO_ROOT
from training import cutout_data
from training.cutout import load_data, parse
from training.cutout_data import (
    BACKGROUND_SOURCES,
    EVAL_ONLY_KINDS,
    PRODUCT_HW,
    TRAIN_KINDS,
    Backgrounds,
    CompositeConfig,
    Objects,
    clean_indices,
    derive_product_mask,
    eval_background,
    eval_composite,
    fake_objects,
    fill_holes,
    load_product_objects,
    mask_passes,
    photo_split,
    procedural,
    product_sample,
    stretch_matrix,
    training_sample,
)
from training.data import is_heldout


def viton_train_copy(root: Path) -> Path:
    """The committed fixture garments (from VITON ``test``) laid out as a ``train`` split: training
    must never read a ``test`` folder, so the dry run gets a copy under ``train/``."""
    for sub in ("cloth", "cloth-mask"):
        shutil.copytree(FIXTURES / "viton" / "test" / sub, root / "train" / sub)
    return root


def test_dry_run_writes_a_loadable_fp16_checkpoint(tmp_path: Path) -> None:
    data = viton_train_copy(tmp_path / "viton")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "training.cutout", "--dry-run", "--tiny", "--no-photos", "--threads", "1"]
    cmd += [
        "--data-dir",
        str(data),
        "--out-dir",
        str(out),
        "--products-dir",
        str(FIXTURES / "fashion-products"),
    ]
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
    assert {"iou_white", "mae_white", "iou_textured", "mae_textured"} <= set(meta["validation"])
    products = meta["data"]["product_objects"]
    assert products["derived"]["photos"] == sum(
        not is_heldout(p.stem) for p in PRODUCT_FIXTURES.glob("*.jpg")
    )
    assert products["trained_on"] + products["validation"] == products["derived"]["passed"]
    assert {"iou_products", "empty_products"} <= set(meta["validation"])
    assert "products" not in meta["data"]["background_sources"]
    net = load_networks(out)[NETWORK]
    assert isinstance(net, CutoutNet) and not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 3, *INPUT_HW)).shape == (1, 1, *INPUT_HW)
    assert Image.open(out / "product_cutout_samples.png").size[0] == 4 * INPUT_HW[1]


PRODUCT_FIXTURES = FIXTURES / "fashion-products" / "images"


def test_dry_run_never_defaults_to_the_shipped_checkpoints() -> None:
    assert parse(["--dry-run"]).out_dir == REPO_ROOT / "runs" / "cutout_dry_run"
    assert parse([]).out_dir == REPO_ROOT / "checkpoints"


def test_training_reads_only_the_train_split(tmp_path: Path) -> None:
    root = viton_train_copy(tmp_path)
    # A "test" split with different garments: none of them may show up.
    rng = np.random.default_rng(0)
    for sub in ("cloth", "cloth-mask"):
        (tmp_path / "test" / sub).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (256, 192, 3), dtype=np.uint8)).save(
                tmp_path / "test" / sub / f"9{i}.jpg"
            )
    opt = parse(
        ["--dry-run", "--no-photos", "--data-dir", str(root), "--products-dir", str(tmp_path / "none")]
    )
    data = load_data(opt)
    objects, raw, val, desc = data.objects, data.raw, data.val, data.desc
    assert objects.names == raw.names == sorted(p.name for p in (FIXTURES / "viton/test/cloth").iterdir())
    assert desc["pairs"] == 4 and desc["objects"].endswith("train cloth + cloth-mask (threshold 128)")
    assert len(val) and not set(val) & set(objects.usable())  # validation garments are not trained on
    assert data.products is None and desc["product_objects"] is None


def test_mask_cleaning() -> None:
    ring = np.zeros((64, 48), np.uint8)
    ring[8:56, 8:40] = 255
    ring[20:40, 16:32] = 0  # an enclosed hole (a white logo VITON's threshold missed)
    assert (fill_holes(ring)[20:40, 16:32] == 255).all()
    shredded = np.zeros((64, 48), np.uint8)
    shredded[8:56:4, 8:40] = 255  # thin stripes: far from its convex hull
    assert clean_indices(np.stack([ring, shredded])).tolist() == [0]


def fake_products(n: int = 6, seed: int = 0) -> Objects:
    """Small product photos at PRODUCT_HW: a coloured ellipse on white, with its mask."""
    rng = np.random.default_rng(seed)
    h, w = PRODUCT_HW
    images = np.full((n, h, w, 3), 250, np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        cv2.ellipse(
            masks[i],
            (w // 2, h // 2),
            (int(rng.integers(10, 25)), int(rng.integers(15, 35))),
            0,
            0,
            360,
            (255,),
            -1,
        )
        images[i][masks[i] > 0] = rng.integers(0, 200, 3)
    return Objects(images, masks, [f"{i}.jpg" for i in range(n)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_samples(seed: int) -> None:
    objects = fake_objects(6, seed=seed)
    products = fake_products(6, seed=seed)
    backgrounds = Backgrounds([np.full((300, 400, 3), 90, np.uint8)], objects)
    rng = np.random.default_rng(seed)
    sources = set()
    for _ in range(24):
        img, alpha, source = training_sample(
            objects, backgrounds, rng, INPUT_HW, raw=objects, products=products, products_raw=products
        )
        assert img.shape == (*INPUT_HW, 3) and img.dtype == np.uint8
        assert alpha.shape == INPUT_HW and alpha.dtype == np.float32
        assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() > 0.5
        sources.add(source)
    textured = {"photo", "fabric", *TRAIN_KINDS}
    allowed = {"white", "white-original", *textured}
    allowed |= {"product-full-frame", "product-original", "product-white"} | {
        f"product-{s}" for s in textured
    }
    assert sources <= allowed
    assert any(s.startswith("product-") for s in sources) and any(
        not s.startswith("product-") for s in sources
    )


def test_full_frame_product_samples_are_what_serving_sees() -> None:
    """The photo stretched whole over the canvas, its mask stretched alike (as cv2.resize does)."""
    products = fake_products(1)
    config = CompositeConfig(product_white_prob=1.0, product_original_prob=1.0, full_frame_prob=1.0)
    backgrounds = Backgrounds([], None)
    _, alpha, source = product_sample(
        products, backgrounds, np.random.default_rng(0), INPUT_HW, products, config
    )
    assert source == "product-full-frame"
    expected = cv2.resize(products.masks[0], INPUT_HW[::-1], interpolation=cv2.INTER_LINEAR) / 255
    flipped = cv2.resize(products.masks[0][:, ::-1], INPUT_HW[::-1], interpolation=cv2.INTER_LINEAR) / 255
    assert min(np.abs(alpha - expected).mean(), np.abs(alpha - flipped).mean()) < 0.01
    m = stretch_matrix(PRODUCT_HW, INPUT_HW)
    assert np.allclose(m[:, :2], np.diag([INPUT_HW[1] / PRODUCT_HW[1], INPUT_HW[0] / PRODUCT_HW[0]]))


def test_other_products_are_never_a_background() -> None:
    """Tiling other product photos behind the object taught "a product photo is background"."""
    assert "products" not in BACKGROUND_SOURCES and not hasattr(cutout_data, "product_grid")
    assert "products" not in inspect.signature(Backgrounds).parameters
    objects = fake_objects(4)
    backgrounds = Backgrounds([np.full((300, 400, 3), 90, np.uint8)], objects)
    assert {s for s, _ in backgrounds.sources()} == set(BACKGROUND_SOURCES)
    rng = np.random.default_rng(0)
    drawn = {backgrounds.textured(rng, (64, 48))[1] for _ in range(200)}
    assert drawn <= {"photo", "fabric", *TRAIN_KINDS} and "products" not in drawn


def synthetic_product(
    rng: np.random.Generator, hw: tuple[int, int] = PRODUCT_HW
) -> tuple[np.ndarray, np.ndarray]:
    """A coloured shape (ellipse + strap) on a noisy near-white backdrop with a faint gradient."""
    h, w = hw
    shape = np.zeros(hw, np.uint8)
    cv2.ellipse(shape, (w // 2, int(h * 0.55)), (w // 3, h // 4), 15, 0, 360, (255,), -1)
    cv2.rectangle(shape, (w // 2 - 3, h // 8), (w // 2 + 3, h // 2), (255,), -1)
    backdrop = 246 + np.linspace(0, 6, h)[:, None, None] + rng.normal(0, 1.5, (h, w, 3))
    colour = np.array([40, 90, 170]) + rng.normal(0, 12, (h, w, 3))
    img = np.where(shape[..., None] > 0, colour, backdrop)
    return np.clip(img, 0, 255).astype(np.uint8), shape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_derived_product_mask_recovers_a_shape_on_a_plain_backdrop(seed: int) -> None:
    img, shape = synthetic_product(np.random.default_rng(seed))
    mask, stats = derive_product_mask(img)
    inter = ((mask > 0) & (shape > 0)).sum()
    union = ((mask > 0) | (shape > 0)).sum()
    assert inter / union > 0.95, stats
    assert mask_passes(stats) is None, stats
    # Holes inside the product (a white logo) are filled.
    logo = img.copy()
    ys, xs = np.nonzero(shape)
    cy, cx = int(ys.mean()), int(xs.mean())
    logo[cy - 3 : cy + 3, cx - 4 : cx + 4] = 250
    assert (derive_product_mask(logo)[0][cy - 3 : cy + 3, cx - 4 : cx + 4] == 255).all()


def test_backdrop_seen_through_a_handle_stays_background() -> None:
    rng = np.random.default_rng(0)
    h, w = PRODUCT_HW
    bag = np.zeros(PRODUCT_HW, np.uint8)
    cv2.rectangle(bag, (10, 40), (50, 70), (255,), -1)
    cv2.ellipse(bag, (30, 40), (16, 24), 0, 180, 360, (255,), 2)  # a thin handle arching above
    backdrop = 248 + rng.normal(0, 1.0, (h, w, 3))
    img = np.clip(np.where(bag[..., None] > 0, np.array([150, 40, 60]), backdrop), 0, 255).astype(np.uint8)
    mask, stats = derive_product_mask(img)
    assert mask_passes(stats) is None, stats
    assert (mask[25:35, 25:35] == 0).all()  # inside the loop: the backdrop
    assert (mask[45:65, 15:45] == 255).all() and (mask[bag > 0] == 255).mean() > 0.95


def test_derived_product_masks_that_cannot_be_trusted_are_rejected() -> None:
    rng = np.random.default_rng(0)
    img, shape = synthetic_product(rng)
    # A light grey product on white: the fill leaks into it at one tolerance or another, or it
    # vanishes.
    for grey, reason in ((215, "unstable (product close to the backdrop)"), (225, "too small")):
        faint = np.where(shape[..., None] > 0, grey + rng.normal(0, 3, img.shape), img)
        assert mask_passes(derive_product_mask(np.clip(faint, 0, 255).astype(np.uint8))[1]) == reason
    # A busy backdrop (a scene, not a studio sweep).
    busy = np.where(shape[..., None] > 0, img, rng.integers(0, 256, img.shape)).astype(np.uint8)
    assert mask_passes(derive_product_mask(busy)[1]) == "backdrop not plain"
    # Nothing there.
    blank = np.full((*PRODUCT_HW, 3), 250, np.uint8)
    assert mask_passes(derive_product_mask(blank)[1]) == "too small"


def test_product_photos_split_by_id(tmp_path: Path) -> None:
    root = FIXTURES / "fashion-products"
    train = load_product_objects(root, "train", cache_dir=None, progress=False)
    heldout = load_product_objects(root, "heldout", cache_dir=None, progress=False)
    train_ids = {n.removesuffix(".jpg") for n in train.objects.names}
    heldout_ids = {n.removesuffix(".jpg") for n in heldout.objects.names}
    assert train_ids and heldout_ids and not train_ids & heldout_ids
    assert all(is_heldout(i) for i in heldout_ids) and not any(is_heldout(i) for i in train_ids)
    assert train.objects.images.shape[1:] == (*PRODUCT_HW, 3) and train.counts()["photos"] == len(train_ids)
    # Training reads the train ids only, and keeps its own validation photos out of training.
    opt = parse(
        [
            "--dry-run",
            "--no-photos",
            "--data-dir",
            str(viton_train_copy(tmp_path)),
            "--products-dir",
            str(root),
        ]
    )
    data = load_data(opt)
    assert data.products is not None
    assert {n.removesuffix(".jpg") for n in data.products.objects.names} == train_ids
    assert not set(data.val_products) & set(data.products.objects.usable())


@pytest.mark.parametrize("kind", [*TRAIN_KINDS, *EVAL_ONLY_KINDS])
def test_procedural_kinds(kind: str) -> None:
    bg = procedural(kind, np.random.default_rng(0), (64, 48))
    assert bg.shape == (64, 48, 3) and bg.dtype == np.float32 and bg.min() >= 0 and bg.max() <= 1


def test_eval_backgrounds_are_fixed_and_unseen(tmp_path: Path) -> None:
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
