"""product_gan: a class-conditional GAN for 64x48 product photos.

Generator: DCGAN-style transposed convolutions with conditional BatchNorm (the
class picks each layer's scale and shift). Discriminator: spectral-norm convs
with a projection head (Miyato & Koyama 2018), hinge loss, Adam(2e-4, (0, 0.9)),
and DiffAugment (Zhao et al. 2020) because 3,600 training photos is a small set.
The class enters both networks as a one-hot vector times a matrix, which exports
to ONNX/TensorRT as a MatMul rather than a batched Gather.

    python -m training.product_gan --iters 4000            # full run (CPU)
    python -m training.product_gan --dataset fake --dry-run  # smoke test
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ecomgen.models.product_gan import (
    CHECKPOINT_NAME,
    NUM_CLASSES,
    NZ,
    Discriminator,
    Generator,
    generate,
)
from ecomgen.numerics import to_uint8_hwc
from ecomgen_client._images import make_grid, save_png
from ecomgen_client.contracts import PRODUCT_CLASSES
from training.data import DEFAULT_PRODUCTS_DIR, fake_products, load_products, to_float
from training.paths import CHECKPOINT_DIR, REPO_ROOT

# --- DiffAugment (colour, translation, cutout), applied to real and fake alike ----


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    dev = x.device
    x = x + (torch.rand(b, 1, 1, 1, device=dev) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=dev) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=dev) + 0.5) + mean
    # Translation by up to 1/8 of each side, zero padded.
    h, w = x.shape[2:]
    sh, sw = h // 8, w // 8
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=dev)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=dev)
    gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    gy = (gy[None] + ty + 1).clamp(0, h + 1)
    gx = (gx[None] + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    idx = torch.arange(b, device=dev)[:, None, None]
    x = padded.permute(0, 2, 3, 1)[idx, gy, gx].permute(0, 3, 1, 2)
    # Cutout of half the side.
    ch, cw = h // 2, w // 2
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=dev)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=dev)
    gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    keep = ((gy[None] - cy + ch // 2).abs() >= (ch + 1) // 2) | (
        (gx[None] - cx + cw // 2).abs() >= (cw + 1) // 2
    )
    return x * keep[:, None].to(x.dtype)


@torch.no_grad()
def recalibrate_batchnorm(g: Generator, batches: int = 200, batch_size: int = 64) -> None:
    """Re-estimate BN running stats as an exact average over many random batches.

    The served generator runs BN in eval mode (so a request's image never depends
    on its batch neighbours); an EMA generator's running stats would otherwise lag.
    """
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    g.train()
    for _ in range(batches):
        z = torch.randn(batch_size, g.nz)
        y = F.one_hot(torch.randint(0, g.num_classes, (batch_size,)), g.num_classes).float()
        g(z, y)
    for m in bns:
        m.momentum = 0.1
    g.eval()


def sample_grid(g: Generator, path: Path, per_class: int = 10) -> None:
    """One row per class, one column per seed."""
    classes = np.repeat(np.arange(g.num_classes), per_class)
    seeds = np.tile(np.arange(per_class), g.num_classes)
    save_png(make_grid(to_uint8_hwc(generate(g, classes, seeds)), cols=per_class), path)


def ema_avg_fn(decay: float):  # type: ignore[no-untyped-def]
    """EMA with warm-up: early on the average follows the generator closely (decay (1+n)/(10+n))."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        return averaged + (current - averaged) * (1 - d)

    return avg


# --- training loop -----------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["products", "fake"], default="products")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_PRODUCTS_DIR)
    p.add_argument("--iters", type=int, default=4000, help="generator steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-dis", type=int, default=2, help="discriminator steps per generator step")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ngf", type=int, default=48)
    p.add_argument("--ndf", type=int, default=24)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (AMX on recent Xeons)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "product_gan")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT_DIR / CHECKPOINT_NAME)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--resume", type=Path, default=None, help="continue from a last.pt of an earlier run")
    p.add_argument("--dry-run", action="store_true", help="a few steps, no checkpoint")
    opt = p.parse_args(argv)
    opt.argv = sys.argv[1:] if argv is None else argv
    if opt.dry_run:
        opt.iters, opt.sample_every = 3, 2
    return opt


@dataclass
class Trained:
    g_ema: Generator
    n_images: int
    wall_s: float
    log: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Nets:
    """The networks, their optimisers and the EMA generator that gets shipped."""

    g: Generator
    d: Discriminator
    g_ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer

    def state(self, it: int, wall_s: float) -> dict:
        """What ``last.pt`` holds (``--resume`` reads it back)."""
        state = {
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "iter": it,
        }
        state.update(opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict(), wall_s=wall_s)
        return state


def build_nets(opt: argparse.Namespace) -> tuple[Nets, int, float]:
    """Fresh networks, or those of ``--resume``; also the first iteration and the wall time before it."""
    g = Generator(ngf=opt.ngf)
    d = Discriminator(ndf=opt.ndf)
    g_ema = AveragedModel(g, avg_fn=ema_avg_fn(opt.ema), use_buffers=True)
    opt_g = torch.optim.Adam(g.parameters(), lr=opt.lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=opt.lr, betas=(0.0, 0.9))
    first, prior_wall = 1, 0.0
    if opt.resume is not None:
        state = torch.load(opt.resume, map_location="cpu")
        g.load_state_dict(state["g"])
        d.load_state_dict(state["d"])
        g_ema.load_state_dict(state["g_ema"])
        if "opt_g" in state:
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
        first, prior_wall = state["iter"] + 1, state.get("wall_s", 0.0)
        print(f"resumed from {opt.resume} at iter {state['iter']}")
    n_g = sum(q.numel() for q in g.parameters()) / 1e6
    n_d = sum(q.numel() for q in d.parameters()) / 1e6
    print(f"G {n_g:.2f}M params, D {n_d:.2f}M")
    return Nets(g, d, g_ema, opt_g, opt_d), first, prior_wall


Batch = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def train_step(
    opt: argparse.Namespace, nets: Nets, real_batch: Batch, fake_batch: Batch, autocast: torch.autocast
) -> dict[str, float]:
    """``--n-dis`` discriminator updates, one generator update and its moving average; the losses."""
    g, d = nets.g, nets.d
    # Update D: hinge loss on DiffAugment-ed real and fake batches.
    for _ in range(opt.n_dis):
        x_real, y_real = real_batch()
        with torch.no_grad(), autocast:
            x_fake, y_fake = fake_batch()
        with autocast:
            d_real = d(diff_augment(x_real), y_real).float()
            d_fake = d(diff_augment(x_fake.float()), y_fake).float()
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        nets.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        nets.opt_d.step()

    # Update G, then its moving average.
    with autocast:
        x_fake, y_fake = fake_batch()
        loss_g = -d(diff_augment(x_fake.float()), y_fake).float().mean()
    nets.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    nets.opt_g.step()
    nets.g_ema.update_parameters(g)
    return {
        "loss_d": loss_d.item(),
        "loss_g": loss_g.item(),
        "d_real": d_real.mean().item(),
        "d_fake": d_fake.mean().item(),
    }


def run(opt: argparse.Namespace) -> Trained:
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    np.random.seed(opt.seed)
    opt.out.mkdir(parents=True, exist_ok=True)

    # (0) Data: the non-held-out split of the product photos.
    if opt.dataset == "fake":
        images, labels = fake_products(opt.batch_size * 2, opt.seed)
    else:
        images, labels = load_products(opt.data_dir, split="train")
    n = images.shape[0]
    print(f"{n} training images, {NUM_CLASSES} classes")

    # (1) Networks, optimisers and the EMA generator that gets shipped.
    nets, first, prior_wall = build_nets(opt)

    def real_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n, (opt.batch_size,))
        x = to_float(images[idx])
        flip = torch.rand(opt.batch_size) < 0.5
        x[flip] = x[flip].flip(3)
        return x, F.one_hot(labels[idx], NUM_CLASSES).float()

    def fake_batch() -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(opt.batch_size, NZ)
        y = F.one_hot(torch.randint(0, NUM_CLASSES, (opt.batch_size,)), NUM_CLASSES).float()
        return nets.g(z, y), y

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=opt.bf16)
    log: list[dict[str, float]] = []
    start = time.time()
    bar = tqdm(range(first, opt.iters + 1), desc="product_gan", dynamic_ncols=True)
    for it in bar:
        # (2) and (3): update D, then G and its moving average.
        rec = {"iter": it, **train_step(opt, nets, real_batch, fake_batch, autocast)}
        log.append(rec)
        bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}")
        if it % opt.sample_every == 0 or it == opt.iters:
            sample_grid(nets.g_ema.module, opt.out / f"samples_{it:06d}.png")  # type: ignore[arg-type]
            torch.save(nets.state(it, prior_wall + time.time() - start), opt.out / "last.pt")

    wall = prior_wall + time.time() - start
    final: Generator = nets.g_ema.module  # type: ignore[assignment]
    # (4) Exact BatchNorm statistics for eval mode (what the server runs).
    recalibrate_batchnorm(final, batches=3 if opt.dry_run else 200)
    sample_grid(final, opt.out / "samples_final.png")
    print(f"trained {opt.iters} iters in {wall / 60:.1f} min")
    return Trained(final, n, wall, log)


def report(opt: argparse.Namespace, trained: Trained) -> None:
    """Save the fp16 checkpoint, its JSON record and the sample grid."""
    opt.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    g_ema = trained.g_ema
    save_file(
        {k: v.half().contiguous() for k, v in g_ema.state_dict().items() if v.is_floating_point()},
        str(opt.checkpoint),
    )
    tail = trained.log[-200:] or [{"loss_d": float("nan"), "loss_g": float("nan")}]
    meta = {
        "model": "product_gan",
        "nz": NZ,
        "ngf": opt.ngf,
        "ndf": opt.ndf,
        "num_classes": NUM_CLASSES,
        "class_names": list(PRODUCT_CLASSES),
        "command": ("python -m training.product_gan " + shlex.join(opt.argv)).strip(),
        "resumed_from": str(opt.resume) if opt.resume else None,
        "data": f"{opt.data_dir} (train split: {trained.n_images} images)",
        "iters": opt.iters,
        "batch_size": opt.batch_size,
        "n_dis": opt.n_dis,
        "wall_time_s": round(trained.wall_s, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "final_loss_d_mean_last200": float(np.mean([r["loss_d"] for r in tail])),
        "final_loss_g_mean_last200": float(np.mean([r["loss_g"] for r in tail])),
        "weights": "EMA generator, BatchNorm stats recalibrated, stored as fp16",
    }
    opt.checkpoint.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    sample_grid(g_ema, opt.checkpoint.with_name("product_gan_samples.png"))
    (opt.out / "log.json").write_text(json.dumps(trained.log))
    print(f"wrote {opt.checkpoint}")


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    trained = run(opt)
    if not opt.dry_run:
        report(opt, trained)


if __name__ == "__main__":
    main()
