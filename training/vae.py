"""personalize: train the product-photo VAE and build the catalogue index.

Recipe (the ablation in training/results/personalize_eval.md compares it with a plain
Gaussian-decoder VAE at the same budget):

* reconstruction: L1 + (1 - SSIM) (``pytorch_msssim``, 11x11 Gaussian window; single-scale,
  because MS-SSIM's five scales need images larger than 64x48), instead of MSE, which
  averages plausible details into blur;
* KL: a beta weight per latent nat relative to the per-pixel loss, warmed up linearly
  from 0 over the first ``--warmup`` of the steps (the decoder learns to use the latent
  before the KL term pulls posteriors towards the prior; no posterior collapse);
* two-stage prior: after training, a Gaussian per article type is fitted to the training
  latents (an ex-post GMM, as in RAE, Ghosh et al. 2020) and stored with the catalogue
  index; personalisation does not need it, prior samples look better with it.

Mixed precision: the forward and backward passes run under bfloat16 autocast with
channels_last (AMX on this host: a batch-64 step took 0.4 s against 1.1-1.6 s in fp32, one
thread), the losses and the KL in fp32; the shipped weights are fp16, the exported networks
fp32. The decoder is trained on its unclipped output (``Decoder.raw``); see
``ecomgen.models.vae.Decoder.forward``.

At the end the script writes, into ``--out-dir`` (default ``checkpoints/``):

* ``personalize_vae.safetensors``: both networks, fp16 (``ecomgen.models.vae.load_networks``
  splits them into ``personalize_encoder`` and ``personalize_decoder``);
* ``personalize_vae.json``: command, data, recipe, wall time, losses, held-out
  reconstruction metrics, machine;
* ``personalize_vae_samples.png``: rows of held-out photos over their reconstructions,
  then prior samples (N(0, I)), then two-stage prior samples;
* ``personalize_catalogue.safetensors``: the catalogue index: posterior means of every
  train-split photo (``latents`` fp16 [M, L]), their ``styles.csv`` ids (``ids`` int64
  [M]) and article types (``class_ids`` int32 [M]), plus the two-stage prior
  (``prior_means`` [C, L], ``prior_chol`` [C, L, L], ``prior_weights`` [C], fp32).

    python -m training.vae --max-minutes 42 --threads 1  # the shipped run (CPU, 42 min)
    python -m training.vae --dataset fake --dry-run         # seconds; writes to a temp dir
    python -m training.vae --build-index                    # only rebuild the catalogue index
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_msssim import ssim as ssim_fn
from safetensors.torch import save_file
from tqdm import tqdm

from ecomgen.hostinfo import cpu_model
from ecomgen.models.vae import CATALOGUE_FILE, CHECKPOINT_NAME, VAE, load_vae, save_vae
from ecomgen.numerics import psnr, to_uint8_hwc
from ecomgen_client._images import make_grid
from training.data import (  # PRODUCT_CLASSES via training.data: the client contract module is moving
    DEFAULT_PRODUCTS_DIR,
    PRODUCT_CLASSES,
    fake_products,
    is_heldout,
    load_image,
    read_styles,
    to_float,
)
from training.paths import CHECKPOINT_DIR, REPO_ROOT

PIXELS = 3 * 64 * 48


# --- data ------------------------------------------------------------------------


@dataclass
class Products:
    images: torch.Tensor  # uint8 [N, 3, 64, 48]
    labels: torch.Tensor  # int64 [N], index into PRODUCT_CLASSES
    ids: np.ndarray  # int64 [N], styles.csv ids

    def __len__(self) -> int:
        return len(self.labels)


def load_split(root: Path, split: str, limit: int | None = None, progress: bool = True) -> Products:
    """One split of the product photos with their ids (the same split as ``training.data.load_products``)."""
    records = [r for r in read_styles(Path(root)) if is_heldout(r.id) == (split == "heldout")]
    records = records[:limit] if limit is not None else records
    images = np.stack([load_image(r.path) for r in tqdm(records, desc=f"load {split}", disable=not progress)])
    return Products(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.tensor([r.label for r in records], dtype=torch.int64),
        np.array([int(r.id) for r in records], dtype=np.int64),
    )


def fake_split(n: int, seed: int) -> Products:
    images, labels = fake_products(n, seed)
    return Products(images, labels, np.arange(n, dtype=np.int64) + 1_000_000 * (seed + 1))


# --- losses and metrics ----------------------------------------------------------


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over the latent: [N]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def ssim01(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of [-1, 1] images, measured on [0, 1] (data range 1, 11x11 Gaussian window)."""
    return ssim_fn((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=False)


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, kind: str, ssim_weight: float) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(rec, x)
    loss = F.l1_loss(rec, x)
    if ssim_weight:
        loss = loss + ssim_weight * (1 - ssim01(rec, x).mean())
    return loss


@torch.no_grad()
def encode(vae: VAE, images: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW -> posterior (mu, logvar), float32 numpy [N, L] each (fp32 forward)."""
    vae.eval()
    mus, lvs = [], []
    for i in range(0, len(images), batch_size):
        mu, lv = vae.encoder(to_float(images[i : i + batch_size]))
        mus.append(mu.numpy())
        lvs.append(lv.numpy())
    return np.concatenate(mus), np.concatenate(lvs)


@torch.no_grad()
def decode(vae: VAE, z: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Latents -> float images in [-1, 1] (fp32 forward)."""
    vae.eval()
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    return torch.cat([vae.decoder(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])


@torch.no_grad()
def reconstruction_metrics(vae: VAE, images: torch.Tensor) -> dict[str, float]:
    """PSNR (dB, mean over images) and SSIM of the reconstructions from the posterior mean, quantised
    to uint8 as served (``ecomgen.numerics``)."""
    mu, logvar = encode(vae, images)
    rec_u8 = to_uint8_hwc(decode(vae, mu).numpy())  # NHWC, what a client receives
    real_u8 = images.permute(0, 2, 3, 1).numpy()
    rec = torch.from_numpy(rec_u8).permute(0, 3, 1, 2).float() / 255.0
    ssim = ssim_fn(rec, images.float() / 255.0, data_range=1.0, size_average=False)
    kl = kl_per_image(torch.from_numpy(mu), torch.from_numpy(logvar))
    active = int((torch.from_numpy(mu).var(0) > 0.01).sum())  # dimensions the encoder uses
    return {
        "psnr_db": float(np.mean(psnr(rec_u8, real_u8, axis=(1, 2, 3)))),
        "ssim": float(ssim.mean()),
        "kl_nats": float(kl.mean()),
        "active_dims": active,
        "n": len(images),
    }


# --- catalogue index and two-stage prior -----------------------------------------


def fit_class_gaussians(
    latents: np.ndarray, labels: np.ndarray, num_classes: int, ridge: float = 1e-3
) -> dict[str, np.ndarray]:
    """A full-covariance Gaussian per article type over the latents: a GMM with known assignments."""
    dim = latents.shape[1]
    means = np.zeros((num_classes, dim), np.float64)
    chols = np.tile(np.eye(dim), (num_classes, 1, 1))
    weights = np.zeros(num_classes, np.float64)
    for c in range(num_classes):
        x = latents[labels == c].astype(np.float64)
        if len(x) == 0:
            continue
        weights[c] = len(x)
        means[c] = x.mean(0)
        if len(x) > 1:
            chols[c] = np.linalg.cholesky(np.cov(x, rowvar=False) + ridge * np.eye(dim))
    return {
        "prior_means": means.astype(np.float32),
        "prior_chol": chols.astype(np.float32),
        "prior_weights": (weights / weights.sum()).astype(np.float32),
    }


def sample_two_stage(prior: dict[str, np.ndarray], n: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """n latents from the per-type Gaussians (type drawn by its weight)."""
    rng = np.random.Generator(np.random.Philox(seed))
    comp = rng.choice(len(prior["prior_weights"]), size=n, p=prior["prior_weights"].astype(np.float64))
    eps = rng.standard_normal((n, prior["prior_means"].shape[1]))
    z = prior["prior_means"][comp] + temperature * np.einsum("nij,nj->ni", prior["prior_chol"][comp], eps)
    return z.astype(np.float32)


def build_catalogue(vae: VAE, train: Products, path: Path, meta: dict[str, str]) -> dict[str, np.ndarray]:
    """Encode every train-split photo; save the index (+ two-stage prior) as safetensors."""
    mu, _ = encode(vae, train.images)
    prior = fit_class_gaussians(mu, train.labels.numpy(), len(PRODUCT_CLASSES))
    tensors = {
        "latents": torch.from_numpy(mu).half(),
        "ids": torch.from_numpy(train.ids.astype(np.int64)),
        "class_ids": train.labels.to(torch.int32),
        **{k: torch.from_numpy(v) for k, v in prior.items()},
    }
    metadata = {
        "class_names": json.dumps(list(PRODUCT_CLASSES)),
        "latent_dim": str(mu.shape[1]),
        "split": "train",
        "metric": "squared L2 between posterior means (ecomgen.serving.aggregate.nearest)",
        **meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return prior


# --- sample grid -----------------------------------------------------------------


@torch.no_grad()
def sample_grid(
    vae: VAE, photos: torch.Tensor, prior: dict[str, np.ndarray] | None, path: Path, cols: int = 12
) -> None:
    """Rows: photos / reconstructions (twice), prior N(0, I) samples, two-stage prior samples."""
    photos = photos[: 2 * cols]
    mu, _ = encode(vae, photos)
    rec = to_uint8_hwc(decode(vae, mu).numpy())
    real = photos.permute(0, 2, 3, 1).numpy()
    rows = []
    for i in range(0, len(photos), cols):
        rows += [real[i : i + cols], rec[i : i + cols]]
    z = np.random.Generator(np.random.Philox(0)).standard_normal((2 * cols, mu.shape[1])).astype(np.float32)
    rows.append(to_uint8_hwc(decode(vae, z).numpy()))
    if prior is not None:
        rows.append(to_uint8_hwc(decode(vae, sample_two_stage(prior, 2 * cols, seed=0)).numpy()))
    grid = make_grid(np.concatenate(rows), cols=cols, fill=200)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


# --- training --------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["products", "fake"], default="products")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_PRODUCTS_DIR,
        help="default: $ECOMGEN_PRODUCTS_DIR or ../shared",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N training photos")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument(
        "--max-minutes", type=float, default=None, help="wall-time cap; the schedule is compressed to fit"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warm-up + cosine)")
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--recon", choices=["l1ssim", "mse"], default="l1ssim", help="reconstruction loss")
    p.add_argument("--ssim-weight", type=float, default=1.0, help="weight of (1 - SSIM) beside L1")
    p.add_argument(
        "--beta", type=float, default=0.3, help="KL weight per nat, relative to the per-pixel loss"
    )
    p.add_argument(
        "--warmup", type=float, default=0.25, help="fraction of steps over which beta ramps from 0"
    )
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="autocast dtype on CPU")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out-dir", type=Path, default=None, help=f"checkpoint directory (default {CHECKPOINT_DIR})"
    )
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--build-index", action="store_true", help="only rebuild the catalogue index from --out-dir"
    )
    p.add_argument("--no-index", action="store_true", help="skip the catalogue index (ablation runs)")
    p.add_argument(
        "--dry-run", action="store_true", help="a few steps on small data; default out-dir is a temp dir"
    )
    opt = p.parse_args(argv)
    opt.argv = sys.argv[1:] if argv is None else list(argv)
    if opt.dry_run:
        opt.iters, opt.log_every, opt.batch_size = 3, 1, 8
        opt.limit = opt.limit or 64
        if opt.out_dir is None:
            opt.out_dir = Path(tempfile.mkdtemp(prefix="personalize_vae_"))
    opt.out_dir = opt.out_dir or CHECKPOINT_DIR
    return opt


def load_data(opt: argparse.Namespace) -> tuple[Products, Products, str]:
    if opt.dataset == "fake":
        n = opt.limit or 256
        return fake_split(n, opt.seed), fake_split(max(n // 4, 8), opt.seed + 1), "fake (random images)"
    train = load_split(opt.data_dir, "train", opt.limit)
    heldout = load_split(opt.data_dir, "heldout", opt.limit)
    data_dir = os.path.relpath(Path(opt.data_dir).resolve(), REPO_ROOT)
    desc = f"{data_dir} (train split: {len(train)} photos; held-out split: {len(heldout)}, never trained on)"
    return train, heldout, desc


def schedule(progress: float, opt: argparse.Namespace) -> tuple[float, float]:
    """(learning rate, beta) at ``progress`` in [0, 1]: linear lr warm-up over 5%, cosine to zero;
    beta ramps linearly from 0 over the first ``opt.warmup`` of training."""
    lr = opt.lr * (
        progress / 0.05 if progress < 0.05 else 0.5 * (1 + math.cos(math.pi * (progress - 0.05) / 0.95))
    )
    beta = opt.beta * min(1.0, progress / opt.warmup) if opt.warmup > 0 else opt.beta
    return lr, beta


def train(opt: argparse.Namespace, vae: VAE, data: Products) -> tuple[list[dict[str, float]], float, int]:
    """The loop; returns the loss log, the wall time (s) and the steps run.

    Progress is steps / ``--iters``, or elapsed / ``--max-minutes`` when that is further along,
    so a time-capped run on a busy machine still finishes its schedule (lr annealed to zero,
    beta fully warmed up) instead of stopping halfway.
    """
    optim = torch.optim.AdamW(vae.parameters(), lr=opt.lr, weight_decay=1e-5)
    # channels_last lets oneDNN use its blocked bf16 (AMX) kernels without reorders.
    memory_format = torch.channels_last if opt.precision == "bf16" else torch.contiguous_format
    vae.to(memory_format=memory_format)  # type: ignore[call-overload]
    images = to_float(data.images).contiguous(memory_format=memory_format)
    n = len(data)
    gen = torch.Generator().manual_seed(opt.seed)
    log: list[dict[str, float]] = []
    window: list[list[float]] = []
    perm, cursor = torch.randperm(n, generator=gen), 0
    vae.train()
    start = time.time()
    budget_s = 60 * opt.max_minutes if opt.max_minutes else None
    bar = tqdm(total=opt.iters, desc="personalize vae", dynamic_ncols=True)
    it, progress = 0, 0.0
    while progress < 1.0:
        it += 1
        if cursor + opt.batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + opt.batch_size]
        cursor += opt.batch_size
        x = images[idx]
        flip = torch.rand(len(x), generator=gen) < 0.5  # products are roughly left-right symmetric
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        lr, beta = schedule(progress, opt)
        for group in optim.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opt.precision == "bf16"):
            mu, logvar = vae.encoder(x)
            mu, logvar = mu.float(), logvar.float()
            z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
            rec = vae.decoder.raw(z).float()  # unclipped: losses keep their gradient at pure white
        rec_loss = reconstruction_loss(rec, x, opt.recon, opt.ssim_weight)
        kl = kl_per_image(mu, logvar).mean()
        loss = rec_loss + beta * kl / PIXELS
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
        optim.step()
        with torch.no_grad():
            l1 = F.l1_loss(rec, x).item()
            ssim = ssim01(rec.detach(), x).mean().item()
        window.append([loss.item(), rec_loss.item(), l1, ssim, kl.item()])
        progress = it / opt.iters
        if budget_s is not None:
            progress = max(progress, (time.time() - start) / budget_s)
        bar.update(1)
        if it % opt.log_every == 0 or progress >= 1.0:
            m = np.mean(window, axis=0)
            window = []
            rec_ = {"iter": it, "lr": lr, "beta": beta, "loss": m[0], "rec": m[1], "l1": m[2], "ssim": m[3]}
            log.append({**{k: round(float(v), 6) for k, v in rec_.items()}, "kl": round(float(m[4]), 3)})
            bar.set_postfix(l1=f"{m[2]:.3f}", ssim=f"{m[3]:.3f}", kl=f"{m[4]:.1f}", beta=f"{beta:.3f}")
    bar.close()
    return log, time.time() - start, it


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    train_set, heldout, data_desc = load_data(opt)
    print(f"{len(train_set)} train / {len(heldout)} held-out photos")
    ckpt = opt.out_dir / f"{CHECKPOINT_NAME}.safetensors"
    record = opt.out_dir / f"{CHECKPOINT_NAME}.json"
    catalogue = opt.out_dir / CATALOGUE_FILE

    if opt.build_index:
        vae = load_vae(ckpt)
        build_catalogue(vae, train_set, catalogue, {"data": data_desc})
        print(f"wrote {catalogue} ({len(train_set)} items)")
        return

    vae = VAE(opt.latent_dim, opt.width)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in vae.named_children()}
    print(
        f"VAE L={opt.latent_dim} width={opt.width}: "
        + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items())
    )
    cpu0 = time.process_time()
    log, wall, steps = train(opt, vae, train_set)
    cpu = time.process_time() - cpu0
    print(f"trained {steps} steps in {wall / 60:.1f} min")

    # Everything below measures the weights as shipped: fp16 storage, fp32 compute.
    save_vae(vae, ckpt)
    shipped = load_vae(ckpt)
    heldout_metrics = reconstruction_metrics(shipped, heldout.images)
    print("held-out reconstruction: " + ", ".join(f"{k} {v:.4g}" for k, v in heldout_metrics.items()))
    prior = None
    if not opt.no_index:
        prior = build_catalogue(shipped, train_set, catalogue, {"data": data_desc})
        print(f"wrote {catalogue} ({len(train_set)} items)")
    sample_grid(shipped, heldout.images, prior, opt.out_dir / f"{CHECKPOINT_NAME}_samples.png")
    meta = {
        "model": "personalize",
        "networks": ["personalize_encoder", "personalize_decoder"],
        "latent_dim": opt.latent_dim,
        "width": opt.width,
        "params": params,
        "command": shlex.join(["python", "-m", "training.vae", *opt.argv]),
        "data": data_desc,
        "recipe": {
            "reconstruction": "MSE" if opt.recon == "mse" else f"L1 + {opt.ssim_weight} * (1 - SSIM)",
            "beta": opt.beta,
            "beta_warmup_fraction": opt.warmup,
            "kl_weight_units": "loss = rec + beta * KL_nats / (3*64*48)",
            "augmentation": "horizontal flip",
            "precision": opt.precision,
        },
        "iters": steps,
        "iters_requested": opt.iters,
        "max_minutes": opt.max_minutes,
        "batch_size": opt.batch_size,
        "lr": opt.lr,
        "seed": opt.seed,
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "final_train": log[-1] if log else None,
        "heldout_reconstruction": heldout_metrics,
        "catalogue": None
        if opt.no_index
        else {"file": catalogue.name, "items": len(train_set), "split": "train"},
        "samples_png": f"{CHECKPOINT_NAME}_samples.png: rows of held-out photos over reconstructions (x2), "
        "N(0, I) samples, two-stage prior samples",
        "weights": "fp16 safetensors, keys encoder.* and decoder.*",
        "losses": log,
    }
    record.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {ckpt}, {record}")


if __name__ == "__main__":
    main()
