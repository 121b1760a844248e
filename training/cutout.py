"""cutout: train the product cut-out (salient-object matting) network on CPU.

Objects (``training.cutout_data``), two sources:

* the VITON ``train`` garments and their cloth-masks (never ``test``, the evaluation set). Masks
  that VITON's own threshold got wrong (near-empty or shredded, solidity < 0.75) are left out,
  and enclosed holes are filled. The last ``--val`` usable garments (by file name) are kept out
  of training to watch the IoU on white and on textured composites (over *training*
  backgrounds: the evaluation's backgrounds stay unseen);
* the Fashion Product photos of the ``train`` ids (``training.data.is_heldout``; the held-out
  ids are never read here) with masks derived from their plain backdrops, only those that pass
  the quality filter; the last ``--val-products`` of them (in ``styles.csv`` order) are kept out
  to watch the IoU and the empty-matte rate on the photos as shot, stretched as serving does.
  ``CompositeConfig.product_prob`` of the samples come from them.

Each sample is composited on the fly at the network's fixed size (``INPUT_HW``): part on white /
near-white (some the original photo on its own backdrop, some product photos stretched whole as
serving does), the rest on procedural surfaces, photographs of real surfaces and scenes and
fabric close-ups, with cast and contact shadows, colour jitter, noise, blur and JPEG (see
``training/cutout_data.py``). Other products' photos are never a background.

Loss: BCE + soft IoU on the full-size logits, an L1 between the Sobel gradients of the predicted
and target mattes (crisp edges), and BCE + IoU deep supervision at 1/8, 1/4 and 1/2 (weight 0.4).
AdamW, linear warm-up, then cosine decay over ``--iters`` or ``--max-minutes``, whichever ends
first (the CPU is shared, so a wall-time budget is what can be promised).

``--init`` fine-tunes from a checkpoint (its fp16 weights and BatchNorm statistics) instead of
starting from scratch.

Writes ``<out-dir>/product_cutout.safetensors`` (fp16), ``product_cutout.json`` (command, data,
wall time, losses, validation IoU, machine) and ``product_cutout_samples.png``.

    # shipped: fine-tuned from the VITON-only checkpoint (commit 4bebf08)
    flock /tmp/ecomgen-cpu.lock python -m training.cutout --data-dir data/viton-full \\
        --init checkpoints/product_cutout --lr 8e-4 --warmup 100 --max-minutes 35 --iters 4000 \\
        --out-dir runs/cutout_ft  # then copied into checkpoints/
    python -m training.cutout --dry-run --out-dir /tmp/cutout    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ecomgen.hostinfo import cpu_model
from ecomgen.models.cutout import (
    DEFAULT_CONFIG,
    INPUT_HW,
    TINY_CONFIG,
    CutoutNet,
    build,
    count_params,
    flops_per_image,
    load_checkpoint,
    save_checkpoint,
)
from training.cutout_data import (
    CACHE_DIR,
    DEFAULT_PRODUCTS_DIR,
    DEFAULT_VITON_DIR,
    TRAIN_KINDS,
    TRAIN_TAG,
    Backgrounds,
    CompositeConfig,
    MaskRule,
    Objects,
    ProductSet,
    clean_indices,
    composite,
    fake_objects,
    load_objects,
    load_photo,
    load_product_objects,
    photo_split,
    training_sample,
)
from training.paths import CHECKPOINT_DIR, REPO_ROOT

TRAIN_SPLIT = "train"  # the only split this module reads


def machine() -> str:
    """The CPU model and count (the CPU results are named by it)."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


# --- data ------------------------------------------------------------------------


@dataclass
class TrainData:
    """What training draws from: VITON objects (decontaminated and as shot), Fashion Product
    photos with derived masks (None without them), backgrounds, the validation items."""

    objects: Objects
    raw: Objects
    products: ProductSet | None
    backgrounds: Backgrounds
    val: np.ndarray  # VITON indices kept out of training
    val_products: np.ndarray  # product indices kept out of training
    desc: dict


def load_data(opt: argparse.Namespace) -> TrainData:
    """Everything training reads, from the train splits only, and its description."""
    limit = opt.limit
    if opt.dataset == "fake":
        objects = fake_objects(opt.limit or 16, seed=opt.seed)
        raw = objects
    else:
        kw = {"limit": limit, "progress": not opt.dry_run, "cache_dir": opt.cache_dir}
        objects = load_objects(opt.data_dir, TRAIN_SPLIT, **kw)
        raw = load_objects(opt.data_dir, TRAIN_SPLIT, clean_edges=False, **kw)
    usable = clean_indices(objects.masks) if opt.dataset != "fake" else np.arange(len(objects))
    n_val = min(opt.val, max(len(usable) - 1, 0))
    val = usable[len(usable) - n_val :] if n_val else usable[:0]
    objects.keep = raw.keep = usable[: len(usable) - n_val]
    photo_paths = photo_split()["train"][: opt.max_photos] if opt.photos else []
    photos = [
        load_photo(p, cache_dir=opt.cache_dir)
        for p in tqdm(photo_paths, desc="photos", disable=opt.dry_run or not photo_paths)
    ]
    products = None
    val_products = np.zeros(0, np.int64)
    if opt.products_dir is not None and (Path(opt.products_dir) / "styles.csv").is_file():
        products = load_product_objects(
            opt.products_dir, TRAIN_SPLIT, opt.max_products, opt.cache_dir, progress=not opt.dry_run
        )
        passed = products.objects.usable()
        n_pval = min(opt.val_products, max(len(passed) - 1, 0))
        val_products = passed[len(passed) - n_pval :] if n_pval else passed[:0]
        products.objects.keep = products.raw.keep = passed[: len(passed) - n_pval]
        if not len(products.objects.usable()):
            products = None
    backgrounds = Backgrounds(photos, objects, TRAIN_KINDS)
    composite_config = CompositeConfig(product_prob=opt.product_prob)
    desc = {
        "objects": f"{opt.dataset}: {opt.data_dir}/{TRAIN_SPLIT} cloth + cloth-mask (threshold 128)",
        "pairs": len(objects),
        "trained_on": len(objects.keep),
        "left_out_bad_masks": int(len(objects) - len(usable)),
        "validation": len(val),
        "product_objects": None
        if products is None
        else {
            "source": f"{opt.products_dir}: Fashion Product photos of the train ids "
            "(training.data.is_heldout false), 60x80, masks derived from the plain backdrop "
            "(training.cutout_data.derive_product_mask), only those passing mask_passes",
            "mask_rule": asdict(MaskRule()),
            "derived": products.counts(),
            "trained_on": len(products.objects.usable()),
            "validation": len(val_products),
        },
        "composite": asdict(composite_config),
        "background_photos": [str(p) for p in photo_paths],
        "background_sources": [s for s, _ in backgrounds.sources()],
        "procedural_kinds": list(TRAIN_KINDS),
    }
    return TrainData(objects, raw, products, backgrounds, val, val_products, desc)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> float32 N x 3 x H x W in [-1, 1], channels-last in memory."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def sample_batch(
    data: TrainData,
    rng: np.random.Generator,
    batch: int,
    hw: tuple[int, int] = INPUT_HW,
    config: CompositeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    p = data.products
    samples = [
        training_sample(
            data.objects,
            data.backgrounds,
            rng,
            hw,
            raw=data.raw,
            config=config or CompositeConfig(),
            products=None if p is None else p.objects,
            products_raw=None if p is None else p.raw,
        )
        for _ in range(batch)
    ]
    images = np.stack([s[0] for s in samples])
    alphas = torch.from_numpy(np.stack([s[1] for s in samples]))[:, None]
    return to_tensor(images), alphas, [s[2] for s in samples]


def stretch(image: np.ndarray) -> np.ndarray:
    """What serving does before the network: the whole photo stretched to INPUT_HW."""
    h, w = INPUT_HW
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def validation_set(data: TrainData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed validation images at INPUT_HW: ``white`` (the original VITON photo, stretched as
    serving does), ``textured`` (the garment in place over a training background, fixed seeds),
    and with product photos ``products`` (the Fashion Product photo as shot, stretched) and
    ``products_textured`` (the product in place over a training background, fixed seeds)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    size = (INPUT_HW[1], INPUT_HW[0])
    sources: list[tuple[str, Objects, Objects, np.ndarray, int]] = [
        ("", data.objects, data.raw, data.val, 10**6)
    ]
    if data.products is not None and len(data.val_products):
        sources.append(("products", data.products.objects, data.products.raw, data.val_products, 2 * 10**6))
    for prefix, objects, raw, val, seed0 in sources:
        white, textured, masks = [], [], []
        for k, i in enumerate(val):
            mask = cv2.resize(np.asarray(objects.masks[i]), size, interpolation=cv2.INTER_LINEAR)
            masks.append(mask.astype(np.float32) / 255)
            white.append(stretch(np.asarray(raw.images[i])))
            rng = np.random.default_rng([TRAIN_TAG, seed0 + k])
            bg, _ = data.backgrounds.textured(rng, INPUT_HW)
            fg = cv2.resize(np.asarray(objects.images[i]), size, interpolation=cv2.INTER_LINEAR)
            img = composite(fg.astype(np.float32) / 255, masks[-1], bg, rng)
            textured.append(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
        m = np.stack(masks) if masks else np.zeros((0, *INPUT_HW), np.float32)
        empty = np.zeros((0, *INPUT_HW, 3), np.uint8)
        names = ("products", "products_textured") if prefix else ("white", "textured")
        out[names[0]] = (np.stack(white) if white else empty, m)
        out[names[1]] = (np.stack(textured) if textured else empty, m)
    return out


# --- losses ----------------------------------------------------------------------

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4


def gradients(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.stack([SOBEL, SOBEL.t()])[:, None].to(x)
    return F.conv2d(x, kernel, padding=1)


def soft_iou_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (prob * target).sum(dim=(1, 2, 3))
    union = (prob + target - prob * target).sum(dim=(1, 2, 3))
    return (1 - (inter + 1) / (union + 1)).mean()


def losses(logits: torch.Tensor, sides: list[torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
    prob = torch.sigmoid(logits)
    out = {
        "bce": F.binary_cross_entropy_with_logits(logits, target),
        "iou": soft_iou_loss(prob, target),
        "grad": (gradients(prob) - gradients(target)).abs().mean() * 4,
    }
    side = torch.zeros(())
    for s in sides:
        t = F.adaptive_avg_pool2d(target, (s.shape[-2], s.shape[-1]))
        side = side + F.binary_cross_entropy_with_logits(s, t) + soft_iou_loss(torch.sigmoid(s), t)
    out["side"] = 0.4 * side
    out["total"] = out["bce"] + out["iou"] + out["grad"] + out["side"]
    return out


# --- evaluation during training --------------------------------------------------


@torch.no_grad()
def predict(model: CutoutNet, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """float32 N x H x W mattes at INPUT_HW from uint8 N x H x W x 3 images at INPUT_HW."""
    model.eval()
    out = [model(to_tensor(images[i : i + batch])).squeeze(1).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, *INPUT_HW), np.float32)


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-image IoU at threshold 0.5."""
    p, t = pred >= 0.5, target >= 0.5
    inter = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


EMPTY_FRACTION = 0.02  # a matte with fewer pixels above 0.5 than this is "no product found"


def empty_rate(pred: np.ndarray) -> float:
    """Share of mattes with under EMPTY_FRACTION of their pixels at or above 0.5."""
    return float(((pred >= 0.5).mean(axis=(1, 2)) < EMPTY_FRACTION).mean()) if len(pred) else 0.0


def validate(model: CutoutNet, val_set: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    out = {}
    for name, (images, masks) in val_set.items():
        if len(images):
            pred = predict(model, images)
            out[f"iou_{name}"] = round(iou(pred, masks), 4)
            out[f"mae_{name}"] = round(float(np.abs(pred - masks).mean()), 4)
            if name.startswith("products"):
                out[f"empty_{name}"] = round(empty_rate(pred), 4)
    return out


def save_samples(
    model: CutoutNet, val_set: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n: int = 6
) -> None:
    """Rows: VITON white, VITON textured, product photo as shot, product textured validation
    items (``n`` each, where present); columns: photo | predicted matte | cut-out over a grey
    checkerboard | target (for product photos: the derived mask)."""
    rows = []
    yy, xx = np.mgrid[0 : INPUT_HW[0], 0 : INPUT_HW[1]]
    checker = np.where(((yy // 16) + (xx // 16)) % 2 == 0, 200, 140).astype(np.float32)[..., None]
    for name in ("white", "textured", "products", "products_textured"):
        if name not in val_set:
            continue
        images, masks = val_set[name]
        if not len(images):
            continue
        step = max(1, len(images) // n)
        idx = np.arange(0, len(images), step)[:n]
        pred = predict(model, images[idx])
        for img, a, t in zip(images[idx], pred, masks[idx], strict=True):
            cut = img.astype(np.float32) * a[..., None] + checker * (1 - a[..., None])
            grey = [np.repeat((m * 255 + 0.5).astype(np.uint8)[..., None], 3, 2) for m in (a, t)]
            rows.append(np.concatenate([img, grey[0], cut.astype(np.uint8), grey[1]], axis=1))
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


# --- training --------------------------------------------------------------------


def lr_at(progress: float, it: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 1% of the peak at progress 1."""
    if it < warmup:
        return peak * (it + 1) / warmup
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_VITON_DIR, help="VITON root (reads <root>/train only)"
    )
    p.add_argument("--dataset", choices=["viton", "fake"], default="viton")
    p.add_argument(
        "--products-dir",
        type=Path,
        default=DEFAULT_PRODUCTS_DIR,
        help="Fashion Product photos (styles.csv + images/; reads the train ids only); absent: VITON only",
    )
    p.add_argument("--product-prob", type=float, default=CompositeConfig.product_prob)
    p.add_argument("--val-products", type=int, default=120, help="train product photos kept out")
    p.add_argument(
        "--init", type=Path, default=None, help="fine-tune from this checkpoint (path without suffix)"
    )
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="decoded-data cache (--dry-run: none)")
    p.add_argument("--iters", type=int, default=8000)
    p.add_argument("--max-minutes", type=float, default=80.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--low-res", type=int, default=192, help="side of the composites early in training")
    p.add_argument("--low-res-until", type=float, default=0.6, help="fraction of the schedule at --low-res")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--val", type=int, default=200, help="train garments kept out for validation")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train pairs")
    p.add_argument("--photos", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-photos", type=int, default=None)
    p.add_argument("--max-products", type=int, default=None)
    p.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="a few steps on a few items, seconds")
    opt = p.parse_args(argv)
    opt.command = ("python -m training.cutout " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    if opt.dry_run:
        opt.iters, opt.batch, opt.val, opt.val_every, opt.warmup = 3, 2, min(opt.val, 2), 10**9, 1
        opt.limit = opt.limit or 16
        opt.cache_dir = None
        opt.max_photos = 2 if opt.max_photos is None else opt.max_photos
        opt.max_products = 24 if opt.max_products is None else opt.max_products
        opt.val_products = min(opt.val_products, 2)
    if opt.out_dir is None:
        opt.out_dir = REPO_ROOT / "runs" / "cutout_dry_run" if opt.dry_run else CHECKPOINT_DIR
    return opt


def init_model(
    opt: argparse.Namespace, val_set: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[CutoutNet, dict | None]:
    """A fresh network, or (``--init``) a checkpoint to fine-tune with its record and scores before."""
    if opt.init is None:
        return build(TINY_CONFIG if opt.tiny else DEFAULT_CONFIG), None
    init_path = Path(opt.init)
    model = load_checkpoint(init_path.parent, init_path.name).train()
    weights = init_path.with_suffix(".safetensors").read_bytes()
    init = {
        "checkpoint": str(opt.init),
        "sha256": hashlib.sha256(weights).hexdigest(),
        "its_command": json.loads(init_path.with_suffix(".json").read_text()).get("command"),
        "validation_before": validate(model, val_set),
    }
    print(f"cutout: fine-tuning from {opt.init}; before: {init['validation_before']}")
    return model, init


@dataclass
class TrainLog:
    iters: int
    seconds: float
    history: list[dict]  # running losses every 50 iterations
    validation: list[dict]  # validation scores every --val-every iterations


def train(
    opt: argparse.Namespace,
    model: CutoutNet,
    data: TrainData,
    val_set: dict[str, tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
) -> TrainLog:
    """The training loop: fresh composites every step, until --iters or --max-minutes."""
    composite_config = CompositeConfig(product_prob=opt.product_prob)
    optim = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    log = TrainLog(0, 0.0, [], [])
    running: dict[str, float] = {}
    train_start = time.time()
    bar = tqdm(range(opt.iters), desc="train", disable=opt.dry_run, mininterval=5)
    it = 0
    for it in bar:
        elapsed = time.time() - train_start
        progress = max(it / opt.iters, elapsed / (opt.max_minutes * 60))
        if progress >= 1.0:
            break
        for group in optim.param_groups:
            group["lr"] = lr_at(progress, it, opt.lr, opt.warmup)
        # Progressive resizing: cheaper low-resolution composites first, the fixed size at the end.
        hw = (opt.low_res, opt.low_res) if progress < opt.low_res_until else INPUT_HW
        x, y, _ = sample_batch(data, rng, opt.batch, hw, composite_config)
        model.train()
        logits, sides = model(x)
        parts = losses(logits, sides, y)
        optim.zero_grad(set_to_none=True)
        parts["total"].backward()
        optim.step()
        for k, v in parts.items():
            value = float(v.detach())
            running[k] = 0.98 * running.get(k, value) + 0.02 * value
        if it % 50 == 0 or opt.dry_run:
            log.history.append({"iter": it, **{k: round(v, 4) for k, v in running.items()}})
            bar.set_postfix(
                loss=f"{running['total']:.3f}",
                iou=f"{running['iou']:.3f}",
                lr=f"{optim.param_groups[0]['lr']:.1e}",
            )
        if it > 0 and it % opt.val_every == 0:
            log.validation.append({"iter": it, **validate(model, val_set)})
            tqdm.write(f"iter {it}: {log.validation[-1]}")
    log.iters = it + 1 if opt.iters else 0
    log.seconds = time.time() - train_start
    return log


def record(
    opt: argparse.Namespace, data: TrainData, init: dict | None, model: CutoutNet, log: TrainLog, extra: dict
) -> dict:
    """The checkpoint's JSON record: command, data, schedule, wall time, validation, machine."""
    return {
        "command": opt.command,
        "init": init,
        "data": data.desc,
        "iters": log.iters,
        "batch": opt.batch,
        "input_hw": list(INPUT_HW),
        **extra,
        "optimiser": f"AdamW(lr={opt.lr}, wd={opt.weight_decay}), {opt.warmup} warm-up iters, cosine to 1% "
        f"over min({opt.iters} iters, {opt.max_minutes} min); composites at {opt.low_res} px for the first "
        f"{opt.low_res_until:.0%} of the schedule, then {INPUT_HW[0]}x{INPUT_HW[1]}",
        "loss": "BCE + soft IoU + 4 x L1(Sobel grad) + 0.4 x (BCE + IoU) deep supervision at 1/8, 1/4, 1/2",
        "train_wall_time_s": round(log.seconds, 1),
        "validation_history": log.validation,
        "history": log.history,
        "machine": machine(),
        "threads": opt.threads,
        "torch": torch.__version__,
        "dry_run": opt.dry_run,
    }


def main(argv: list[str] | None = None) -> dict:
    opt = parse(argv)
    torch.set_num_threads(opt.threads)
    torch.set_flush_denormal(True)  # denormal weights/moments late in training slow CPU kernels
    torch.manual_seed(opt.seed)
    rng = np.random.default_rng([TRAIN_TAG, opt.seed])
    start = time.time()

    data = load_data(opt)
    val_set = validation_set(data)
    model, init = init_model(opt, val_set)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # FlopCounterMode takes seconds to warm up: the smoke run skips it.
    params, flops = count_params(model), (None if opt.dry_run else flops_per_image(model))
    print(f"cutout: {params / 1e6:.2f} M params, {flops} FLOPs at {INPUT_HW}; {data.desc}")

    log = train(opt, model, data, val_set, rng)

    final = validate(model, val_set)
    model = model.to(memory_format=torch.contiguous_format).eval()
    meta = record(opt, data, init, model, log, {"params": params, "flops_per_image": flops})
    meta.update(wall_time_s=round(time.time() - start, 1), validation=final)
    out_dir = Path(opt.out_dir)
    save_checkpoint(model, out_dir, meta)
    save_samples(model, val_set, out_dir / "product_cutout_samples.png")
    print(f"cutout: {log.iters} iters in {log.seconds / 60:.1f} min; validation {final}; wrote {out_dir}")
    return meta


if __name__ == "__main__":
    main()
