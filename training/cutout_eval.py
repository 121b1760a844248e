"""cutout_eval: the cut-out network against two real alternatives on held-out VITON ``test``
garments and on held-out Fashion Product photos.

Conditions (every item of ``<root>/test``, 2,032 garments at 256x192, with their cloth-masks
thresholded at 128 as the ground truth):

* ``white``: the original catalogue photo on its studio white;
* ``textured``: the same garment (edge colours decontaminated, as in training) pasted in place
  over a background training never saw, with cast and contact shadows, through the training
  compositing code with fixed seeds: even items a held-out photograph (every 4th installed
  photo, ``training.cutout_data.photo_split``), odd items a procedural surface from the
  evaluation seed stream, cycling through all kinds including two that training never draws
  (floor tiles, terrazzo).

Held-out Fashion Product photos (``--products-dir``; the ids ``training.data.is_heldout`` holds
out, 942 of the 4,500 60x80 shop photos, which training never reads): the photo as shot. The
empty-matte rate is measured on all of them: "network" = under 2% of the network's matte at or
above 0.5 (``training.cutout.EMPTY_FRACTION``), "served" = no pixel of the refined matte at or
above ``ALPHA_THRESHOLD``, which is when the studio answers "no product found". IoU / MAE /
boundary F are measured only where a mask could be *derived* from the plain backdrop and passed
the quality filter (``training.cutout_data.derive_product_mask`` / ``mask_passes``): these are
derived masks, not hand-labelled ground truth, they leave out most white-on-white products, and
they favour backdrop-threshold methods such as ``threshold-on-white`` by construction.

Methods:

* ``ours``: the photo resized to the network's fixed size (``INPUT_HW``) by the served pre step
  (``ecomgen.serving.handlers.products.resize``: ``INTER_AREA`` to shrink, ``INTER_LANCZOS4`` to
  enlarge), the network (PyTorch fp32, eval mode), then ``ecomgen.creative.matte.refine_alpha``
  (fast guided filter) back to the photo's size;
* ``ours, bilinear``: the same matte resized bilinearly (what the guided filter adds);
* ``baseline``: with ``--baseline``, another checkpoint (the previous one) through the same
  steps as ``ours``;
* ``threshold-on-white``: ``garment_mask`` of today's try-on handler
  (``ecomgen/serving/handlers/tryon.py``);
* ``GrabCut``: OpenCV ``grabCut``, 5 iterations, initialised with the rectangle inset by
  ``GRABCUT_MARGIN`` of each side (at least 2 px), at the photo's native 256x192.

Metrics, per image then averaged: IoU of the mattes thresholded at 0.5; MAE of the matte in
[0, 1] against the binary mask; boundary F-measure (DAVIS-style: boundary pixels of each
binarised mask, matched within a tolerance of ``ceil(0.008 x image diagonal)`` px, i.e. 3 px at
256x192). The tables are repeated on the subset whose ground-truth mask passes the same
plausibility rule training applies to its own masks (``clean_indices``: solidity >= 0.75),
because a few VITON cloth-masks are themselves broken (shredded where the garment is white).

Also measured: the network's ONNX Runtime latency (1 image, 2 threads) and ``refine_alpha`` on
a 2000x2000 photo. Writes ``training/results/cutout_eval.md`` / ``.json``, ``cutout_eval.png``
(every 250th test item, a fixed rule) and ``cutout_eval_products.png`` (every 40th held-out
product photo).

    flock /tmp/ecomgen-cpu.lock python -m training.cutout_eval --data-dir data/viton-full \\
        --every 7 --baseline /tmp/product_cutout_old
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from ecomgen.creative.matte import refine_alpha, upsample_bilinear
from ecomgen.creative.studio import ALPHA_THRESHOLD
from ecomgen.models.cutout import (
    INPUT,
    INPUT_HW,
    NETWORK,
    ONNX_OPSET,
    OUTPUT,
    count_params,
    flops_per_image,
    load_checkpoint,
)
from ecomgen.models.cutout import load_networks as load_cutout
from ecomgen.serving.handlers.products import resize as served_resize
from ecomgen.serving.handlers.tryon import garment_mask
from ecomgen_client.contracts import PRODUCT_CLASSES
from training.cutout import EMPTY_FRACTION, machine
from training.cutout_data import (
    DEFAULT_PRODUCTS_DIR,
    DEFAULT_VITON_DIR,
    EVAL_KINDS,
    EVAL_ONLY_KINDS,
    MaskRule,
    Objects,
    clean_indices,
    eval_background,
    eval_composite,
    load_objects,
    load_photo,
    load_product_objects,
    photo_split,
    product_records,
)
from training.data import read_styles
from training.paths import BUILD_DIR, CHECKPOINT_DIR, RESULTS_DIR

GRABCUT_MARGIN = 0.03  # of each side
GRABCUT_ITERS = 5
BOUNDARY_TOLERANCE = 0.008  # of the image diagonal (DAVIS)
PICTURE_EVERY = 250
PRODUCT_PICTURE_EVERY = 40
METHODS = ("ours", "ours, bilinear", "baseline", "threshold-on-white", "GrabCut")


# --- methods ---------------------------------------------------------------------


def to_network_size(image: np.ndarray) -> np.ndarray:
    """The served pre step's resize: the whole photo stretched to INPUT_HW."""
    return served_resize(image, INPUT_HW[1], INPUT_HW[0])


@torch.no_grad()
def network_mattes(model: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """float32 N x INPUT_HW mattes for uint8 N x H x W x 3 RGB photos."""
    out = []
    for i in range(0, len(images), batch):
        x = np.stack([to_network_size(im) for im in images[i : i + batch]])
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        out.append(model(t).squeeze(1).numpy())
    return np.concatenate(out)


def grabcut(image: np.ndarray, margin: float = GRABCUT_MARGIN, iters: int = GRABCUT_ITERS) -> np.ndarray:
    """float32 {0, 1}: OpenCV GrabCut from a rectangle inset by ``margin`` of each side."""
    h, w = image.shape[:2]
    mx, my = max(2, round(margin * w)), max(2, round(margin * h))
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(
        image[..., ::-1].copy(),
        mask,
        (mx, my, w - 2 * mx, h - 2 * my),
        bgd,
        fgd,
        iters,
        cv2.GC_INIT_WITH_RECT,
    )
    return ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)


# --- metrics ---------------------------------------------------------------------


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask that have a background 4-neighbour (the image border is not an edge)."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))).astype(bool)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tol: int) -> float:
    """DAVIS-style boundary F-measure of two boolean masks, matching within ``tol`` px."""
    bp, bg = boundary(pred), boundary(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol + 1, 2 * tol + 1))
    near_gt = cv2.dilate(bg.astype(np.uint8), disk).astype(bool)
    near_pred = cv2.dilate(bp.astype(np.uint8), disk).astype(bool)
    precision = (bp & near_gt).sum() / bp.sum()
    recall = (bg & near_pred).sum() / bg.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def tolerance_px(hw: tuple[int, int]) -> int:
    return math.ceil(BOUNDARY_TOLERANCE * math.hypot(*hw))


def scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """(IoU at 0.5, MAE, boundary F) of one matte in [0, 1] against a binary mask in {0, 1}."""
    p, g = pred >= 0.5, gt >= 0.5
    union = (p | g).sum()
    iou = 1.0 if union == 0 else float((p & g).sum() / union)
    return iou, float(np.abs(pred - gt).mean()), boundary_f(p, g, tolerance_px((gt.shape[0], gt.shape[1])))


# --- timing ----------------------------------------------------------------------


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, 3, *INPUT_HW),),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def p50_ms(fn, runs: int, warmup: int = 5) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def timings(model: torch.nn.Module, threads: int) -> dict[str, float]:
    path = export_onnx(model, BUILD_DIR / "onnx" / f"{NETWORK}.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *INPUT_HW)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = sess.run([OUTPUT], {INPUT: x})[0]
    # A 2000x2000 white marketplace-style photo with one product, and a plausible low-res matte.
    photo = np.full((2000, 2000, 3), 250, np.uint8)
    cv2.ellipse(photo, (1000, 1050), (620, 800), 0, 0, 360, (40, 90, 170), -1)
    low = np.zeros(INPUT_HW, np.float32)
    cv2.ellipse(low, (128, 134), (79, 102), 0, 0, 360, (1.0,), -1)
    low = np.asarray(cv2.GaussianBlur(low, (0, 0), 1.0), np.float32)
    return {
        "onnx_max_abs_diff": float(np.abs(got - ref).max()),
        "onnxruntime_ms_p50": p50_ms(lambda: sess.run([OUTPUT], {INPUT: x}), 50),
        "refine_alpha_2000_ms_p50": p50_ms(lambda: refine_alpha(photo, low), 30),
    }


# --- evaluation ------------------------------------------------------------------


Scored = dict[str, dict[str, list[tuple[int, tuple[float, float, float]]]]]


def test_composites(
    opt: argparse.Namespace, clean: Objects, raw: Objects, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """(white photos, textured composites, each composite's background kind, the held-out photos)."""
    hw = (raw.masks.shape[1], raw.masks.shape[2])
    eval_photos = photo_split()["eval"]
    photos = [load_photo(p) for p in eval_photos]
    white = np.asarray(raw.images)
    textured = np.empty_like(white)
    sources = []
    for i in tqdm(range(len(items)), desc="composite", disable=not opt.progress):
        # Seeds follow the test item's index in the whole split, so a subset sees the same composites.
        bg, src = eval_background(int(items[i]), hw, photos)
        textured[i] = eval_composite(np.asarray(clean.images[i]), np.asarray(raw.masks[i]), bg, int(items[i]))
        sources.append(src)
    return white, textured, sources, eval_photos


def score_garments(
    opt: argparse.Namespace,
    model: torch.nn.Module,
    baseline: torch.nn.Module | None,
    conditions: dict[str, np.ndarray],
    masks: np.ndarray,
    grabcut_items: set[int],
) -> tuple[Scored, dict[str, dict[str, dict[int, np.ndarray]]]]:
    """Every method on every item of each condition: (scores, the mattes kept for the picture)."""
    hw = (masks.shape[1], masks.shape[2])
    results: Scored = {}
    picture: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for cond, images in conditions.items():
        lowres = network_mattes(model, images)
        lowres_base = None if baseline is None else network_mattes(baseline, images)
        per: dict[str, list[tuple[int, tuple[float, float, float]]]] = {m: [] for m in METHODS}
        pics: dict[str, dict[int, np.ndarray]] = {m: {} for m in METHODS}
        for i in tqdm(range(len(images)), desc=cond, disable=not opt.progress):
            preds = {
                "ours": refine_alpha(images[i], lowres[i]).astype(np.float32) / 255,
                "ours, bilinear": upsample_bilinear(lowres[i], hw).astype(np.float32) / 255,
                "threshold-on-white": garment_mask(images[i]),
            }
            if lowres_base is not None:
                preds["baseline"] = refine_alpha(images[i], lowres_base[i]).astype(np.float32) / 255
            if i in grabcut_items:
                preds["GrabCut"] = grabcut(images[i])
            for m, p in preds.items():
                per[m].append((i, scores(p, masks[i])))
                if i % max(1, PICTURE_EVERY // opt.every) == 0:
                    pics[m][i] = p
        results[cond], picture[cond] = per, pics
    return results, picture


def evaluate(opt: argparse.Namespace) -> dict:
    torch.set_num_threads(opt.threads)
    cv2.setNumThreads(opt.threads)
    start = time.time()
    model = load_cutout(opt.checkpoint_dir)[NETWORK]
    baseline = None
    if opt.baseline is not None:
        baseline = load_checkpoint(Path(opt.baseline).parent, Path(opt.baseline).name)
    clean = load_objects(opt.data_dir, "test", limit=opt.limit)
    raw = load_objects(opt.data_dir, "test", limit=opt.limit, clean_edges=False)
    # A fixed-rule subset (every N-th test item by name) when the CPU cannot be had for long; use an
    # odd N, since even and odd items get photo and procedural backgrounds in turn.
    items = np.arange(0, len(raw), opt.every)
    clean.images, raw.images, raw.masks = clean.images[items], raw.images[items], raw.masks[items]
    raw.names = [raw.names[i] for i in items]
    n = len(items)
    masks = np.asarray(raw.masks, dtype=np.float32) / 255
    hw = (masks.shape[1], masks.shape[2])
    white, textured, sources, eval_photos = test_composites(opt, clean, raw, items)
    grabcut_items = set(range(0, n, opt.grabcut_every))
    conditions = {"white": white, "textured": textured}
    results, picture = score_garments(opt, model, baseline, conditions, masks, grabcut_items)

    keep = set(clean_indices(np.asarray(raw.masks)).tolist())
    summary = summarise(results, keep, sources)
    products, product_rows = (
        evaluate_products(model, baseline, opt) if opt.products_dir is not None else (None, [])
    )
    meta = {
        "command": opt.command,
        "checkpoint": str(opt.checkpoint_dir),
        "training": training_record(Path(opt.checkpoint_dir)),
        "baseline": None if opt.baseline is None else str(opt.baseline),
        "data": f"{opt.data_dir}/test cloth + cloth-mask (threshold 128), {n} garments at {hw[0]}x{hw[1]}"
        + (f" (every {opt.every}th test item by name)" if opt.every > 1 else ""),
        "clean_gt_subset": len(keep),
        "eval_background_photos": [str(p) for p in eval_photos],
        "eval_procedural_kinds": list(EVAL_KINDS),
        "eval_only_kinds": list(EVAL_ONLY_KINDS),
        "grabcut": f"margin {GRABCUT_MARGIN:.0%} of each side (min 2 px), {GRABCUT_ITERS} iterations, "
        "native size, "
        f"every {opt.grabcut_every} item(s): {len(grabcut_items)} per condition",
        "boundary_tolerance_px": tolerance_px(hw),
        "picture_every": max(1, PICTURE_EVERY // opt.every),
        "params": count_params(model),
        "flops_per_image": flops_per_image(model),
        "input_hw": list(INPUT_HW),
        "machine": machine(),
        "threads": opt.threads,
        "summary": summary,
        "products": products,
        "timing": timings(model, opt.threads),
        "wall_time_s": round(time.time() - start, 1),
    }
    write_picture(white, textured, masks, picture, opt.out_dir / "cutout_eval.png")
    if product_rows:
        write_rows(product_rows, opt.out_dir / "cutout_eval_products.png")
    write_report(meta, opt.out_dir)
    return meta


def empty_rates(low: np.ndarray, refined: list[np.ndarray], items: list[int]) -> dict:
    """Empty-matte rates over ``items``: network (under EMPTY_FRACTION of the low-res matte at or
    above 0.5) and served (no refined pixel at or above ALPHA_THRESHOLD: "no product found")."""
    if not items:
        return {"n": 0}
    net = (low[items] >= 0.5).mean(axis=(1, 2)) < EMPTY_FRACTION
    served = [not bool((refined[i] >= ALPHA_THRESHOLD).any()) for i in items]
    return {
        "n": len(items),
        "network": round(float(net.mean()), 4),
        "network_count": int(net.sum()),
        "served": round(float(np.mean(served)), 4),
        "served_count": int(np.sum(served)),
    }


def evaluate_products(
    model: torch.nn.Module, baseline: torch.nn.Module | None, opt: argparse.Namespace
) -> tuple[dict, list[np.ndarray]]:
    """Held-out Fashion Product photos: empty-matte rates on all of them, IoU / MAE / boundary F
    against the derived masks where those pass the quality filter, by article type too."""
    root = Path(opt.products_dir)
    ps = load_product_objects(root, "heldout", limit=opt.products_limit, progress=opt.progress)
    images = np.asarray(ps.raw.images)
    masks = np.asarray(ps.raw.masks, dtype=np.float32) / 255
    ids = [i for i, _ in product_records(root, "heldout")][: len(ps)]
    label_of = {r.id: r.label for r in read_styles(root)}
    classes = [PRODUCT_CLASSES[label_of[i]] for i in ids]
    n = len(ps)
    passed = [i for i, r in enumerate(ps.reasons) if r is None]
    failed = [i for i, r in enumerate(ps.reasons) if r is not None]
    nets = {"ours": model} if baseline is None else {"ours": model, "baseline": baseline}
    lows = {name: network_mattes(net, images) for name, net in nets.items()}
    refined = {
        name: [
            refine_alpha(images[i], low[i])
            for i in tqdm(range(n), desc=f"products {name}", disable=not opt.progress)
        ]
        for name, low in lows.items()
    }
    per: dict[str, list[tuple[int, tuple[float, float, float]]]] = {m: [] for m in METHODS}
    pics: dict[int, dict[str, np.ndarray]] = {}
    hw = images.shape[1:3]
    for i in tqdm(range(n), desc="products methods", disable=not opt.progress):
        preds = {name: refined[name][i].astype(np.float32) / 255 for name in nets}
        preds["ours, bilinear"] = upsample_bilinear(lows["ours"][i], (hw[0], hw[1])).astype(np.float32) / 255
        preds["threshold-on-white"] = garment_mask(images[i])
        preds["GrabCut"] = grabcut(images[i])
        if ps.reasons[i] is None:
            for m, p in preds.items():
                per[m].append((i, scores(p, masks[i])))
        if i % PRODUCT_PICTURE_EVERY == 0:
            pics[i] = preds
    empty = {
        name: {
            "all": empty_rates(lows[name], refined[name], list(range(n))),
            "mask_passed": empty_rates(lows[name], refined[name], passed),
            "mask_failed": empty_rates(lows[name], refined[name], failed),
        }
        for name in nets
    }
    by_class = product_classes(classes, ps.reasons, nets, lows, refined, per)
    summary = {
        "data": f"{root}: the held-out ids (training.data.is_heldout), {n} photos at {hw[0]}x{hw[1]}",
        "derived_masks": ps.counts(),
        "mask_rule": asdict(MaskRule()),
        "empty": empty,
        "scores_on_derived_masks": {m: mean_scores(rows) for m, rows in per.items() if rows},
        "by_class": by_class,
        "picture_every": PRODUCT_PICTURE_EVERY,
    }
    return summary, product_picture_rows(images, masks, ps.reasons, pics)


def product_classes(
    classes: list[str],
    reasons: list[str | None],
    nets: dict[str, torch.nn.Module],
    lows: dict[str, np.ndarray],
    refined: dict[str, list[np.ndarray]],
    per: dict[str, list[tuple[int, tuple[float, float, float]]]],
) -> dict[str, dict]:
    """Per article type: each network's empty-matte rates and scores, and threshold-on-white's."""
    by_class: dict[str, dict] = {}
    for c in sorted(set(classes)):
        members = [i for i in range(len(classes)) if classes[i] == c]
        members_ok = {i for i in members if reasons[i] is None}
        by_class[c] = {
            name: {
                "empty": empty_rates(lows[name], refined[name], members),
                "scores": mean_scores(per[name], members_ok),
            }
            for name in nets
        }
        by_class[c]["threshold-on-white"] = {"scores": mean_scores(per["threshold-on-white"], members_ok)}
    return by_class


def product_picture_rows(
    images: np.ndarray, masks: np.ndarray, reasons: list[str | None], pics: dict[int, dict[str, np.ndarray]]
) -> list[np.ndarray]:
    """Rows of the products picture, two items side by side: photo | mattes | derived mask."""
    order = ("ours", "baseline", "threshold-on-white", "GrabCut")
    rows = []
    for i, preds in pics.items():
        tiles = [images[i]] + [
            np.repeat((preds[m] * 255 + 0.5).astype(np.uint8)[..., None], 3, 2) for m in order if m in preds
        ]
        gt = np.repeat((masks[i] * 255).astype(np.uint8)[..., None], 3, 2)
        if reasons[i] is not None:
            gt = (gt * 0.4 + np.array([160, 0, 0]) * 0.6).astype(np.uint8)  # red: the mask failed the filter
        tiles.append(gt)
        big = [cv2.resize(t, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for t in tiles]
        rows.append(
            np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=60) for t in big], axis=1)
        )
    paired = []
    for k in range(0, len(rows), 2):
        right = rows[k + 1] if k + 1 < len(rows) else np.full_like(rows[k], 60)
        paired.append(
            np.concatenate([rows[k], np.full((rows[k].shape[0], 8, 3), 255, np.uint8), right], axis=1)
        )
    return paired


def write_rows(rows: list[np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


def mean_scores(rows: list[tuple[int, tuple[float, float, float]]], items: set[int] | None = None) -> dict:
    vals = np.array([s for i, s in rows if items is None or i in items], dtype=np.float64)
    if not len(vals):
        return {"n": 0}
    return {
        "n": len(vals),
        "iou": round(float(vals[:, 0].mean()), 4),
        "mae": round(float(vals[:, 1].mean()), 4),
        "boundary_f": round(float(vals[:, 2].mean()), 4),
    }


def summarise(results: dict, keep: set[int], sources: list[str]) -> dict:
    out: dict = {}
    for cond, per in results.items():
        out[cond] = {
            m: {"all": mean_scores(rows), "clean_gt": mean_scores(rows, keep)} for m, rows in per.items()
        }
    # "ours" on the textured condition, by background source.
    by_source: dict[str, dict] = {}
    for src in sorted(set(sources)):
        items = {i for i, s in enumerate(sources) if s == src}
        by_source[src] = {
            m: mean_scores(results["textured"][m], items) for m in ("ours", "baseline", "threshold-on-white")
        }
    out["textured_by_background"] = by_source
    return out


def write_picture(
    white: np.ndarray, textured: np.ndarray, masks: np.ndarray, picture: dict, path: Path
) -> None:
    """Every PICTURE_EVERY-th item: photo | ours | threshold-on-white | GrabCut | ground truth, for
    white (left half) then textured (right half)."""
    rows = []
    for i in sorted(picture["white"]["ours"]):
        row = []
        for cond, images in (("white", white), ("textured", textured)):
            row.append(images[i])
            for m in ("ours", "threshold-on-white", "GrabCut"):
                p = picture[cond][m].get(i)
                tile = (
                    np.full(images[i].shape, 128, np.uint8)
                    if p is None
                    else np.repeat((p * 255 + 0.5).astype(np.uint8)[..., None], 3, 2)
                )
                row.append(tile)
            row.append(np.repeat((masks[i] * 255).astype(np.uint8)[..., None], 3, 2))
        rows.append(
            np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=60) for t in row], axis=1)
        )
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


def photo_label(path: str) -> str:
    """A readable name: plasma wallpapers are <Name>/contents/images/<size>.jpg."""
    p = Path(path)
    return p.parents[2].name if p.parent.name == "images" else p.stem


def training_record(checkpoint_dir: Path) -> dict:
    """The checkpoint's training command, wall time and init, from its JSON."""
    path = checkpoint_dir / "product_cutout.json"
    if not path.exists():
        return {}
    m = json.loads(path.read_text())
    init = m.get("init") or {}
    return {
        "command": m.get("command"),
        "wall_time_s": m.get("wall_time_s"),
        "iters": m.get("iters"),
        "init": init.get("checkpoint"),
        "init_sha256": init.get("sha256"),
    }


def summary_lines(meta: dict) -> list[str]:
    """A short old-vs-new table (only with a baseline)."""
    s, pr = meta["summary"], meta.get("products")
    if not meta.get("baseline"):
        return []

    def cell(cond: str, m: str, subset: str, key: str = "iou") -> str:
        r = s[cond][m][subset]
        return f"{r[key]:.4f}" if r["n"] else "-"

    lines = [
        "## Summary: baseline (previous checkpoint) vs ours",
        "",
        "| measure | baseline | ours |",
        "|---|---|---|",
    ]
    for cond, subset, label in (
        ("white", "all", "VITON test, white, IoU (all)"),
        ("textured", "all", "VITON test, textured, IoU (all)"),
        ("white", "clean_gt", "VITON test, white, IoU (plausible cloth-mask)"),
        ("textured", "clean_gt", "VITON test, textured, IoU (plausible cloth-mask)"),
    ):
        lines.append(f"| {label} | {cell(cond, 'baseline', subset)} | {cell(cond, 'ours', subset)} |")
    if pr:
        e, sc = pr["empty"], pr["scores_on_derived_masks"]
        for key, label in (
            ("network", "held-out product photos: empty matte (network, < 2% at 0.5)"),
            ("served", "held-out product photos: empty matte (served: 'no product found')"),
        ):
            b, o = e["baseline"]["all"], e["ours"]["all"]
            count = key + "_count"
            lines.append(f"| {label}, all {o['n']} | {b[key]:.2%} ({b[count]}) | {o[key]:.2%} ({o[count]}) |")
        for key in ("iou", "mae", "boundary_f"):
            lines.append(
                f"| held-out product photos: {key} vs derived masks ({sc['ours']['n']}) "
                f"| {sc['baseline'][key]:.4f} | {sc['ours'][key]:.4f} |"
            )
    return [*lines, ""]


def product_lines(pr: dict) -> list[str]:
    c = pr["derived_masks"]
    failed = ", ".join(f"{k.removeprefix('failed: ')} {v}" for k, v in c.items() if k.startswith("failed"))
    nets = list(pr["empty"])
    lines = [
        "## Held-out Fashion Product photos",
        "",
        f"Data: {pr['data']}; never read by training. Derived masks: {c['passed']} of {c['photos']} pass "
        f"the quality filter (failed: {failed}). The scores below are against these **derived** "
        "masks (plain-backdrop flood fill, `training.cutout_data.derive_product_mask`), not "
        "hand-labelled ground truth; they leave out most white-on-white products (where the "
        "empty-matte rates of the failed subset speak), and they favour backdrop thresholds such as "
        "threshold-on-white by construction.",
        "",
        "### Empty mattes",
        "",
        "network: under 2% of the network's matte at or above 0.5; served: no pixel of the refined "
        'matte at or above the studio\'s alpha threshold, i.e. "no product found".',
        "",
        "| checkpoint | photos | network empty | served empty |",
        "|---|---|---|---|",
    ]
    for name in nets:
        for subset, label in (
            ("all", "all"),
            ("mask_passed", "derived mask passed"),
            ("mask_failed", "derived mask failed (mostly white on white)"),
        ):
            r = pr["empty"][name][subset]
            if r["n"]:
                lines.append(
                    f"| {name} | {label}: {r['n']} | {r['network']:.2%} ({r['network_count']}) "
                    f"| {r['served']:.2%} ({r['served_count']}) |"
                )
    lines += [
        "",
        "### Against the derived masks",
        "",
        "| method | n | IoU | MAE | boundary F |",
        "|---|---|---|---|---|",
    ]
    for m in METHODS:
        r = pr["scores_on_derived_masks"].get(m)
        if r and r["n"]:
            lines.append(f"| {m} | {r['n']} | {r['iou']:.4f} | {r['mae']:.4f} | {r['boundary_f']:.4f} |")
    head = " | ".join(f"{n} empty (served) | {n} IoU" for n in nets)
    lines += [
        "",
        "### By article type",
        "",
        f"| article type | photos | {head} | threshold-on-white IoU |",
        "|---|---|" + "---|---|" * len(nets) + "---|",
    ]
    for cls, r in pr["by_class"].items():
        cells = " | ".join(
            f"{r[n]['empty']['served']:.2%} | "
            + (f"{r[n]['scores']['iou']:.4f} ({r[n]['scores']['n']})" if r[n]["scores"]["n"] else "-")
            for n in nets
        )
        th = r["threshold-on-white"]["scores"]
        th_cell = f"{th['iou']:.4f}" if th["n"] else "-"
        lines.append(f"| {cls} | {r[nets[0]]['empty']['n']} | {cells} | {th_cell} |")
    lines += [
        "",
        f"Picture (`cutout_eval_products.png`): every {pr['picture_every']}th held-out photo, two per "
        "row, each: photo | ours | baseline (if any) | threshold-on-white | GrabCut | derived mask "
        "(tinted red where it failed the quality filter), at 2x.",
        "",
    ]
    return lines


def header_lines(meta: dict) -> list[str]:
    """Command, training, machine, data, network, metrics and targets, then the summary table."""
    t = meta["timing"]
    lines = [
        "# Product cut-out network: evaluation",
        "",
        f"Command: `{meta['command']}`  ",
        "Training: "
        + (
            f"`{meta['training']['command']}` ({meta['training']['iters']} iterations, "
            f"{meta['training']['wall_time_s'] / 60:.1f} min wall time"
            + (
                f"; fine-tuned from `{meta['training']['init']}` sha256 "
                f"{meta['training']['init_sha256'][:12]}"
                if meta["training"].get("init")
                else ""
            )
            + "); details in `checkpoints/product_cutout.json`.  "
            if meta.get("training")
            else "see `checkpoints/product_cutout.json` (command, data, wall time).  "
        ),
        f"Baseline: `{meta['baseline']}` (the previous checkpoint, through the same steps as ours).  "
        if meta.get("baseline")
        else "",
        f"Machine: {meta['machine']}, {meta['threads']} threads. "
        f"Wall time {meta['wall_time_s'] / 60:.1f} min.",
        "",
        f"Data: {meta['data']}. Ground truth: the cloth-mask. Research data (VITON, Zalando): research only.",
        "",
        f"Network: {meta['params'] / 1e6:.2f} M parameters, {meta['flops_per_image'] / 1e9:.2f} GFLOPs "
        f"(2 x MACs, convolutions) at {meta['input_hw'][0]}x{meta['input_hw'][1]}; ONNX Runtime "
        f"{t['onnxruntime_ms_p50']:.1f} ms p50 for one image on {meta['threads']} threads "
        f"(ONNX vs PyTorch max |diff| {t['onnx_max_abs_diff']:.1e}). `refine_alpha` on a 2000x2000 photo: "
        f"{t['refine_alpha_2000_ms_p50']:.1f} ms p50.",
        "",
        "Metrics: IoU of the matte thresholded at 0.5; MAE of the matte in [0, 1]; boundary F-measure "
        f"(DAVIS-style, tolerance ceil(0.008 x diagonal) = {meta['boundary_tolerance_px']} px). "
        "Means over images.",
        f"GrabCut: {meta['grabcut']}.",
        "",
        "Targets: IoU >= 0.97 on white, >= 0.93 on textured composites; on held-out product photos an "
        "empty-matte rate near 0.",
        "",
        *summary_lines(meta),
    ]
    return lines


def garment_lines(meta: dict) -> list[str]:
    """The VITON test tables: all garments and the plausible-mask subset, white and textured, then
    the textured condition by background."""
    s = meta["summary"]
    lines: list[str] = []
    for subset, title in (
        ("all", "All test garments"),
        (
            "clean_gt",
            "Test garments whose cloth-mask is plausible "
            f"(solidity >= 0.75; {meta['clean_gt_subset']} items)",
        ),
    ):
        lines += [f"## {title}", ""]
        for cond, desc in (
            ("white", "white: the original studio photo"),
            ("textured", "textured: composited over backgrounds training never saw"),
        ):
            lines += [f"### {desc}", "", "| method | n | IoU | MAE | boundary F |", "|---|---|---|---|---|"]
            for m in METHODS:
                r = s[cond][m][subset]
                if r["n"]:
                    lines.append(
                        f"| {m} | {r['n']} | {r['iou']:.4f} | {r['mae']:.4f} | {r['boundary_f']:.4f} |"
                    )
            lines.append("")
    lines += [
        "## Textured condition by background (all test garments)",
        "",
        "Held-out photos (every 4th installed photo by path): "
        f"{', '.join(photo_label(p) for p in meta['eval_background_photos'])}. "
        f"Procedural kinds never drawn in training: {', '.join(meta['eval_only_kinds'])}; "
        "the others use a disjoint seed stream.",
        "",
        "| background | n | ours IoU | ours MAE | ours boundary F | baseline IoU | threshold-on-white IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for src, r in s["textured_by_background"].items():
        o, b, th = r["ours"], r["baseline"], r["threshold-on-white"]
        b_iou = f"{b['iou']:.4f}" if b["n"] else "-"
        lines.append(
            f"| {src} | {o['n']} | {o['iou']:.4f} | {o['mae']:.4f} | {o['boundary_f']:.4f} "
            f"| {b_iou} | {th['iou']:.4f} |"
        )
    lines += [
        "",
        f"Picture (`cutout_eval.png`): every {meta['picture_every']}th evaluated item; per row: "
        "white photo | ours | "
        "threshold-on-white | GrabCut | ground truth, then the same for the textured composite.",
        "",
    ]
    return lines


def write_report(meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cutout_eval.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = header_lines(meta) + garment_lines(meta)
    if meta.get("products"):
        lines += product_lines(meta["products"])
    (out_dir / "cutout_eval.md").write_text("\n".join(lines))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_VITON_DIR, help="VITON root (reads <root>/test)")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument(
        "--baseline", type=Path, default=None, help="another checkpoint to compare (path without suffix)"
    )
    p.add_argument(
        "--products-dir",
        type=Path,
        default=DEFAULT_PRODUCTS_DIR,
        help="Fashion Product photos (reads the held-out ids only)",
    )
    p.add_argument("--no-products", dest="products_dir", action="store_const", const=None)
    p.add_argument("--products-limit", type=int, default=None, help="only the first N held-out photos")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--limit", type=int, default=None, help="only the first N test garments")
    p.add_argument("--every", type=int, default=1, help="evaluate every N-th test item only (a fixed rule)")
    p.add_argument("--grabcut-every", type=int, default=1, help="GrabCut on every N-th item (it is slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    opt = p.parse_args(argv)
    opt.command = (
        "python -m training.cutout_eval " + shlex.join(sys.argv[1:] if argv is None else argv)
    ).strip()
    return opt


def main(argv: list[str] | None = None) -> None:
    meta = evaluate(parse(argv))
    print(json.dumps(meta["summary"], indent=1))
    print(json.dumps(meta["timing"]))


if __name__ == "__main__":
    main()
