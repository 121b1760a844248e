"""cutout_eval: the cut-out network against two real alternatives on held-out VITON ``test`` garments.

Conditions (every item of ``<root>/test``, 2,032 garments at 256x192, with their cloth-masks
thresholded at 128 as the ground truth):

* ``white``: the original catalogue photo on its studio white;
* ``textured``: the same garment (edge colours decontaminated, as in training) pasted in place
  over a background training never saw, with cast and contact shadows, through the training
  compositing code with fixed seeds: even items a held-out photograph (every 4th installed
  photo, ``training.cutout_data.photo_split``), odd items a procedural surface from the
  evaluation seed stream, cycling through all kinds including two that training never draws
  (floor tiles, terrazzo).

Methods:

* ``ours``: the photo stretched to the network's fixed size (``INPUT_HW``; cv2 ``INTER_LINEAR``
  when enlarging, ``INTER_AREA`` when shrinking), the network (PyTorch fp32, eval mode), then
  ``ecomgen.creative.matte.refine_alpha`` (fast guided filter) back to the photo's size;
* ``ours, bilinear``: the same matte resized bilinearly (what the guided filter adds);
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
a 2000x2000 photo. Writes ``training/results/cutout_eval.md`` / ``.json`` and
``cutout_eval.png`` (every 250th test item, a fixed rule).

    flock /tmp/ecomgen-cpu.lock python -m training.cutout_eval --data-dir data/viton-full
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from ecomgen.creative.matte import refine_alpha, upsample_bilinear
from ecomgen.models.cutout import INPUT, INPUT_HW, NETWORK, ONNX_OPSET, OUTPUT, count_params, flops_per_image
from ecomgen.models.cutout import load_networks as load_cutout
from ecomgen.serving.handlers.tryon import garment_mask
from training.cutout import machine
from training.cutout_data import (
    DEFAULT_VITON_DIR,
    EVAL_KINDS,
    EVAL_ONLY_KINDS,
    clean_indices,
    eval_background,
    eval_composite,
    load_objects,
    load_photo,
    photo_split,
)
from training.paths import BUILD_DIR, CHECKPOINT_DIR, RESULTS_DIR

GRABCUT_MARGIN = 0.03  # of each side
GRABCUT_ITERS = 5
BOUNDARY_TOLERANCE = 0.008  # of the image diagonal (DAVIS)
PICTURE_EVERY = 250
METHODS = ("ours", "ours, bilinear", "threshold-on-white", "GrabCut")


# --- methods ---------------------------------------------------------------------


def to_network_size(image: np.ndarray) -> np.ndarray:
    """The served pre step's resize: the whole photo stretched to INPUT_HW."""
    h, w = INPUT_HW
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


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
    return iou, float(np.abs(pred - gt).mean()), boundary_f(p, g, tolerance_px(gt.shape))


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
    cv2.ellipse(low, (128, 134), (79, 102), 0, 0, 360, 1.0, -1)
    low = cv2.GaussianBlur(low, (0, 0), 1.0)
    return {
        "onnx_max_abs_diff": float(np.abs(got - ref).max()),
        "onnxruntime_ms_p50": p50_ms(lambda: sess.run([OUTPUT], {INPUT: x}), 50),
        "refine_alpha_2000_ms_p50": p50_ms(lambda: refine_alpha(photo, low), 30),
    }


# --- evaluation ------------------------------------------------------------------


def evaluate(opt: argparse.Namespace) -> dict:
    torch.set_num_threads(opt.threads)
    cv2.setNumThreads(opt.threads)
    start = time.time()
    model = load_cutout(opt.checkpoint_dir)[NETWORK]
    clean = load_objects(opt.data_dir, "test", limit=opt.limit)
    raw = load_objects(opt.data_dir, "test", limit=opt.limit, clean_edges=False)
    # A fixed-rule subset (every N-th test item by name) when the CPU cannot be had for long; use an
    # odd N, since even and odd items get photo and procedural backgrounds in turn.
    items = np.arange(0, len(raw), opt.every)
    clean.images, raw.images, raw.masks = clean.images[items], raw.images[items], raw.masks[items]
    raw.names = [raw.names[i] for i in items]
    n = len(items)
    masks = np.asarray(raw.masks, dtype=np.float32) / 255
    hw = masks.shape[1:]
    eval_photos = photo_split()["eval"]
    photos = [load_photo(p) for p in eval_photos]
    white = np.asarray(raw.images)
    textured = np.empty_like(white)
    sources = []
    for i in tqdm(range(n), desc="composite", disable=not opt.progress):
        # Seeds follow the test item's index in the whole split, so a subset sees the same composites.
        bg, src = eval_background(int(items[i]), hw, photos)
        textured[i] = eval_composite(np.asarray(clean.images[i]), np.asarray(raw.masks[i]), bg, int(items[i]))
        sources.append(src)
    grabcut_items = set(range(0, n, opt.grabcut_every))

    results: dict[str, dict[str, list[tuple[int, tuple[float, float, float]]]]] = {}
    picture: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for cond, images in (("white", white), ("textured", textured)):
        lowres = network_mattes(model, images)
        per = {m: [] for m in METHODS}  # type: ignore[var-annotated]
        pics = {m: {} for m in METHODS}  # type: ignore[var-annotated]
        for i in tqdm(range(n), desc=cond, disable=not opt.progress):
            preds = {
                "ours": refine_alpha(images[i], lowres[i]).astype(np.float32) / 255,
                "ours, bilinear": upsample_bilinear(lowres[i], hw).astype(np.float32) / 255,
                "threshold-on-white": garment_mask(images[i]),
            }
            if i in grabcut_items:
                preds["GrabCut"] = grabcut(images[i])
            for m, p in preds.items():
                per[m].append((i, scores(p, masks[i])))
                if i % max(1, PICTURE_EVERY // opt.every) == 0:
                    pics[m][i] = p
        results[cond], picture[cond] = per, pics

    keep = set(clean_indices(np.asarray(raw.masks)).tolist())
    summary = summarise(results, keep, sources)
    meta = {
        "command": opt.command,
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
        "timing": timings(model, opt.threads),
        "wall_time_s": round(time.time() - start, 1),
    }
    write_picture(white, textured, masks, picture, opt.out_dir / "cutout_eval.png")
    write_report(meta, opt.out_dir)
    return meta


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
            m: mean_scores(results["textured"][m], items) for m in ("ours", "threshold-on-white")
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


def write_report(meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cutout_eval.json").write_text(json.dumps(meta, indent=2) + "\n")
    s, t = meta["summary"], meta["timing"]
    lines = [
        "# Product cut-out network: evaluation",
        "",
        f"Command: `{meta['command']}`  ",
        "Training: see `checkpoints/product_cutout.json` (command, data, wall time).  ",
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
        "Targets: IoU >= 0.97 on white, >= 0.93 on textured composites.",
        "",
    ]
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
        "| background | n | ours IoU | ours MAE | ours boundary F | threshold-on-white IoU |",
        "|---|---|---|---|---|---|",
    ]
    for src, r in s["textured_by_background"].items():
        o, th = r["ours"], r["threshold-on-white"]
        lines.append(
            f"| {src} | {o['n']} | {o['iou']:.4f} | {o['mae']:.4f} | {o['boundary_f']:.4f} "
            f"| {th['iou']:.4f} |"
        )
    lines += [
        "",
        f"Picture (`cutout_eval.png`): every {meta['picture_every']}th evaluated item; per row: "
        "white photo | ours | "
        "threshold-on-white | GrabCut | ground truth, then the same for the textured composite.",
        "",
    ]
    (out_dir / "cutout_eval.md").write_text("\n".join(lines))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_VITON_DIR, help="VITON root (reads <root>/test)")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
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
