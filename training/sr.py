"""sr: train the x4 super-resolution network (or the ESPCN baseline) on VITON train photos.

High-resolution data: every person and cloth photo of the VITON ``train`` split (256x192;
never ``test``, the held-out evaluation set). Each sample is a random crop of ``4*patch``
pixels, flipped left-right half the time, then degraded the way real thumbnails are:

* a slight Gaussian blur on the high-resolution crop (``--blur-prob``, sigma 1-3 px at high
  resolution, i.e. 0.25-0.75 px after downscaling),
* bicubic x4 downscaling (PIL ``Image.Resampling.BICUBIC``, as the evaluation does),
* JPEG re-encoding of the low-resolution crop at quality 60-95 (``--jpeg-prob``).

A few train photos (``--val``) are kept out of training to watch the gain over bicubic.
L1 loss, Adam, linear warm-up then cosine decay over ``--iters`` or ``--max-minutes``, whichever
ends first (the CPU is shared, so a wall-time budget is what can be promised). Writes
``<out-dir>/sr.safetensors`` (fp16), ``sr.json`` (command, data, wall time, losses, machine)
and ``sr_samples.png`` (bicubic | ours | ground truth); ``--arch espcn`` writes ``sr_espcn.*``.

    python -m training.sr                                    # the shipped network (CPU, 44 min)
    python -m training.sr --arch espcn                       # the ESPCN baseline (10 min)
    python -m training.sr --dataset fake --dry-run --out-dir /tmp/sr   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from tqdm import tqdm

from ecomgen.hostinfo import cpu_model
from ecomgen.models.sr import (
    DEFAULT_CONFIG,
    SCALE,
    STEMS,
    STEP,
    build,
    count_params,
    flops_per_image,
    save_checkpoint,
    to_uint8,
    to_unit_range,
)
from ecomgen.numerics import psnr
from training.paths import CHECKPOINT_DIR, REPO_ROOT
from training.viton import DEFAULT_VITON_DIR, fake_tryon, load_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PHOTO_DIRS = ("image", "cloth")  # person photos, catalogue garment photos
BLUR_SIGMA = (1.0, 3.0)  # high-resolution pixels
JPEG_QUALITY = (60, 95)


# --- data ------------------------------------------------------------------------


def list_photos(root: Path, split: str) -> dict[str, list[Path]]:
    """The person (``image/``) and garment (``cloth/``) photos of one VITON split, sorted."""
    out = {}
    for sub in PHOTO_DIRS:
        directory = Path(root) / split / sub
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} not found: expected the VITON/CP-VTON layout")
        out[sub] = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return out


def load_photos(paths: list[Path], desc: str) -> np.ndarray:
    """uint8 N x 256 x 192 x 3 (other sizes are fitted to 256x192 as the try-on loader does)."""
    first = load_rgb(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        out[i] = load_rgb(path)
    return out


def fake_photos(n: int, seed: int = 0) -> np.ndarray:
    """Synthetic stand-ins for smoke runs: the try-on fakes plus stripes for some texture."""
    data = fake_tryon((n + 1) // 2, seed)
    photos = np.concatenate([data.person, data.cloth])[:n].copy()
    h, w = photos.shape[1:3]
    photos[:, h // 2 :: 6, : w // 2] = 30
    return photos


def downscale(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The clean low-resolution input: PIL bicubic, as the evaluation and the README do."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def degrade(
    hr: np.ndarray, rng: np.random.Generator, blur_prob: float, jpeg_prob: float, scale: int = SCALE
) -> np.ndarray:
    """HR crop (uint8 HxWx3) -> its low-resolution input with the random degradations."""
    im = Image.fromarray(hr)
    if rng.random() < blur_prob:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(*BLUR_SIGMA))))
    im = im.resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.Resampling.BICUBIC)
    if rng.random() < jpeg_prob:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return np.asarray(im)


def sample_batch(
    photos: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    patch: tuple[int, int],
    blur_prob: float,
    jpeg_prob: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lowres, highres) float NCHW in [-1, 1]: random crops, flips and degradations."""
    ph, pw = patch[0] * SCALE, patch[1] * SCALE
    n, h, w = photos.shape[:3]
    lrs, hrs = [], []
    for i in rng.integers(0, n, batch_size):
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        crop = photos[i, y : y + ph, x : x + pw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)
        hrs.append(crop)
        lrs.append(degrade(crop, rng, blur_prob, jpeg_prob))
    return to_unit_range(torch.from_numpy(np.stack(lrs))), to_unit_range(torch.from_numpy(np.stack(hrs)))


# --- helpers ---------------------------------------------------------------------


def machine() -> str:
    """The CPU model (``ecomgen.hostinfo``) and the logical CPU count: the CPU results are named by it."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def bicubic_up(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """PIL bicubic upsampling (the baseline every SR result is compared with)."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def shaved_mean_db(a: np.ndarray, b: np.ndarray, shave: int = SCALE) -> float:
    """Mean per-image RGB PSNR (``ecomgen.numerics.psnr``) of uint8 NHWC batches, ``shave`` border
    pixels left out."""
    crop = (slice(None), slice(shave, -shave), slice(shave, -shave))
    return float(np.mean(psnr(a[crop], b[crop], axis=(1, 2, 3))))


@torch.no_grad()
def upscale(model: torch.nn.Module, lr: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 NHWC low-res -> uint8 NHWC x4 with the served conversion."""
    model.eval()
    outs = [
        to_uint8(model(to_unit_range(torch.from_numpy(lr[i : i + batch_size])))).numpy()
        for i in range(0, len(lr), batch_size)
    ]
    return np.concatenate(outs)


def save_strip(model: torch.nn.Module, photos: np.ndarray, path: Path) -> None:
    """Rows: bicubic | ours | ground truth, on the given (train) photos."""
    lr = np.stack([downscale(p) for p in photos])
    ours = upscale(model, lr)
    rows = [np.concatenate([bicubic_up(lr[i]), ours[i], photos[i]], axis=1) for i in range(len(photos))]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def lr_factor(progress: float, it: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 1% of the peak at progress 1."""
    if it < warmup:
        return (it + 1) / warmup
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --- parse -> run -> report ------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(STEMS), default="sr")
    p.add_argument("--dataset", choices=["viton", "fake"], default="viton")
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_VITON_DIR, help="VITON root (env ECOMGEN_VITON_DIR)"
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N photos of each kind")
    p.add_argument("--val", type=int, default=64, help="train photos kept out of training, for monitoring")
    p.add_argument("--iters", type=int, default=20000, help="at most; see --max-minutes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, nargs=2, default=(48, 40), metavar=("H", "W"), help="LR patch")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--channels", type=int, default=DEFAULT_CONFIG["channels"])
    p.add_argument("--blocks", type=int, default=DEFAULT_CONFIG["blocks"])
    p.add_argument("--blur-prob", type=float, default=0.25)
    p.add_argument("--jpeg-prob", type=float, default=0.25)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (AMX) for forward/backward (default: on for sr, off for espcn)",
    )
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget: the cosine schedule runs over whichever of --iters and this ends first "
        "(default: 44 for sr, 10 for espcn)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"where the checkpoint goes (default {CHECKPOINT_DIR}; runs/sr_dry_run for --dry-run)",
    )
    p.add_argument("--dry-run", action="store_true", help="a few steps on a few photos, seconds")
    opt = p.parse_args(argv)
    # The shipped runs' settings: sr 44 min with bf16 (2.3x faster on AMX), ESPCN 10 min in fp32.
    if opt.max_minutes is None:
        opt.max_minutes = {"sr": 44.0, "espcn": 10.0}[opt.arch]
    if opt.bf16 is None:
        opt.bf16 = opt.arch == "sr"
    if opt.out_dir is None:
        opt.out_dir = REPO_ROOT / "runs" / "sr_dry_run" if opt.dry_run else CHECKPOINT_DIR
    if opt.dry_run:
        opt.iters, opt.warmup, opt.eval_every, opt.val = 3, 1, 2, 4
        opt.limit = opt.limit or 8
    opt.command = ("python -m training.sr " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    return opt


def load_data(opt: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(train photos, monitoring photos, description); only the ``train`` split is read."""
    if opt.dataset == "fake":
        photos = fake_photos(16 if opt.dry_run else 64, opt.seed)
        val = min(opt.val, len(photos) // 2)
        return photos[val:], photos[:val], f"fake ({len(photos)} synthetic photos)"
    lists = list_photos(opt.data_dir, "train")
    per_kind = opt.val // 2
    train_paths, val_paths = [], []
    for paths in lists.values():
        paths = paths[: opt.limit]
        train_paths += paths[: len(paths) - per_kind]
        val_paths += paths[len(paths) - per_kind :]
    counts = ", ".join(f"{len(v[: opt.limit])} {k}" for k, v in lists.items())
    desc = (
        f"{os.path.relpath(Path(opt.data_dir).resolve(), REPO_ROOT)} train split ({counts}; "
        f"{len(train_paths)} trained on, the last {per_kind} of each kind kept out for monitoring)"
    )
    return load_photos(train_paths, "viton train"), load_photos(val_paths, "viton val"), desc


def build_model(opt: argparse.Namespace) -> tuple[torch.nn.Module, dict, torch.memory_format]:
    """The network to train (in training mode), its config and the memory format it runs in."""
    config = {"channels": opt.channels, "blocks": opt.blocks} if opt.arch == "sr" else {}
    memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
    # channels_last is oneDNN's fast convolution layout on CPU (4x over NCHW in fp32 here).
    model = build(opt.arch, config).train().to(memory_format=memory_format)  # type: ignore[call-overload]
    print(f"{opt.arch}: {count_params(model) / 1e3:.1f}K params")
    return model, config, memory_format


def train(
    opt: argparse.Namespace,
    model: torch.nn.Module,
    photos: np.ndarray,
    memory_format: torch.memory_format,
    monitor: Callable[[], float],
) -> tuple[int, list[dict[str, float]], list[float]]:
    """The L1 training loop; ``monitor()`` gives the validation gain over bicubic in dB.

    Returns the iterations done, the monitoring history and the per-iteration losses.
    """
    rng = np.random.default_rng(opt.seed)
    optim = torch.optim.Adam(model.parameters(), lr=opt.lr, betas=(0.9, 0.99))
    history: list[dict[str, float]] = []
    losses: list[float] = []
    start = time.time()
    budget_s = opt.max_minutes * 60 if opt.max_minutes else float("inf")

    def progress(it: int) -> float:
        """Share of the schedule done: by iterations, or by wall time when ``--max-minutes`` binds
        first (the CPU is shared, so its speed varies; the cosine still ends at its floor)."""
        return max(it / opt.iters, (time.time() - start) / budget_s)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return sample_batch(photos, rng, opt.batch_size, tuple(opt.patch), opt.blur_prob, opt.jpeg_prob)

    # One thread prepares the next batch while this one trains (PIL releases the GIL);
    # a single worker draws from ``rng`` in order, so runs stay reproducible.
    pool = ThreadPoolExecutor(1)
    pending = pool.submit(next_batch)
    bar = tqdm(range(1, opt.iters + 1), desc=f"sr {opt.arch}", dynamic_ncols=True)
    for it in bar:
        lr, hr = pending.result()
        pending = pool.submit(next_batch)
        lr = lr.contiguous(memory_format=memory_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opt.bf16):
            out = model(lr)
        loss = F.l1_loss(out.float(), hr)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        for group in optim.param_groups:
            group["lr"] = opt.lr * lr_factor(progress(it - 1), it - 1, opt.warmup)
        optim.step()
        losses.append(loss.item())
        bar.set_postfix(l1=f"{np.mean(losses[-50:]):.4f}")
        done = progress(it) >= 1.0
        if it % opt.eval_every == 0 or done:
            gain = monitor()
            history.append(
                {
                    "iter": it,
                    "l1_mean_last": float(np.mean(losses[-opt.eval_every :])),
                    "val_gain_db": round(gain, 3),
                    "minutes": round((time.time() - start) / 60, 2),
                }
            )
            bar.write(f"iter {it}: L1 {history[-1]['l1_mean_last']:.4f}, val +{gain:.2f} dB over bicubic")
            model.train()
        if done:
            break
    pool.shutdown(cancel_futures=True)
    return it, history, losses


def run(opt: argparse.Namespace) -> dict:
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    photos, val, data_desc = load_data(opt)
    print(
        f"{len(photos)} training photos, {len(val)} monitoring photos at {photos.shape[1]}x{photos.shape[2]}"
    )
    model, config, memory_format = build_model(opt)
    val_lr = np.stack([downscale(p) for p in val])
    val_bicubic = shaved_mean_db(np.stack([bicubic_up(x) for x in val_lr]), val)
    start = time.time()
    it, history, losses = train(
        opt, model, photos, memory_format, lambda: shaved_mean_db(upscale(model, val_lr), val) - val_bicubic
    )
    wall = time.time() - start
    model.eval()
    final_val = shaved_mean_db(upscale(model, val_lr), val)
    print(f"trained {it} iters in {wall / 60:.1f} min; val {final_val:.2f} dB (bicubic {val_bicubic:.2f})")
    return {
        "model": model,
        "photos": photos,
        "data": data_desc,
        "iters_done": it,
        "time_bound": it < opt.iters,
        "wall": wall,
        "history": history,
        "losses": losses,
        "val_psnr": final_val,
        "val_bicubic": val_bicubic,
        "config": config,
    }


def report(opt: argparse.Namespace, r: dict) -> None:
    model = r["model"]
    stem = STEMS[opt.arch]
    every = max(1, len(r["losses"]) // 100)
    meta = {
        "model": stem,
        "arch": opt.arch,
        "config": r["config"],
        "step": STEP if opt.arch == "sr" else None,
        "scale": SCALE,
        "contract": "lowres [N,3,H,W] float32 RGB in [-1,1] (u8/127.5-1) -> highres [N,3,4H,4W], "
        "unclipped; uint8 = floor((clip(x,-1,1)+1)*127.5+0.5)",
        "params": count_params(model),
        "flops_per_64x48": flops_per_image(model, 64, 48),
        "flops_convention": "torch FlopCounterMode: 2 x MACs, convolutions only",
        "command": opt.command,
        "data": r["data"],
        "degradations": {
            "downscale": "PIL bicubic x4 of a random crop (flipped left-right with p=0.5)",
            "blur": f"p={opt.blur_prob}, Gaussian sigma U{BLUR_SIGMA} px at high resolution, "
            "before downscaling",
            "jpeg": f"p={opt.jpeg_prob}, quality U{JPEG_QUALITY} on the low-resolution crop",
        },
        "lr_patch": list(opt.patch),
        "batch_size": opt.batch_size,
        "iters": r["iters_done"],
        "iters_planned": opt.iters,
        "schedule_time_bound": r["time_bound"],
        "optimiser": f"Adam(lr={opt.lr}, betas=(0.9, 0.99)), {opt.warmup} warm-up iters, cosine to 1% over "
        + (
            f"max(iters / {opt.iters}, wall time / {opt.max_minutes} min)" if opt.max_minutes else "the iters"
        ),
        "loss": "L1 on [-1, 1] images",
        "bf16_autocast": opt.bf16,
        "channels_last": opt.channels_last,
        "seed": opt.seed,
        "wall_time_s": round(r["wall"], 1),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "monitor": {
            "what": "RGB PSNR (4 px border shaved) on the train photos kept out of training, "
            "clean bicubic LR",
            "ours_db": round(r["val_psnr"], 3),
            "bicubic_db": round(r["val_bicubic"], 3),
            "history": r["history"],
        },
        "l1_every": every,
        "l1": [
            round(float(np.mean(r["losses"][i : i + every])), 5) for i in range(0, len(r["losses"]), every)
        ],
        "weights": "fp16 safetensors",
        "licence": "research only: trained on VITON (Han et al., CVPR 2018; Zalando images)",
    }
    path = save_checkpoint(model, opt.out_dir, stem, meta)
    # Two person and two garment photos from the training set (the test split is never read here).
    photos = r["photos"]
    picks = np.linspace(0, len(photos) - 1, 4).round().astype(int)
    save_strip(model, photos[picks], opt.out_dir / f"{stem}_samples.png")
    print(f"wrote {path}, {stem}.json, {stem}_samples.png")


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    report(opt, run(opt))


if __name__ == "__main__":
    main()
