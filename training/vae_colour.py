"""personalize: train the latent -> colour predictor that lets the server choose latents by colour.

The aggregate step draws more candidate latents than it returns and keeps those whose decoded
colour would be nearest the history's (``ecomgen.serving.aggregate.choose_by_colour``). Decoding
every candidate would multiply the decoder's work, so a small MLP predicts the colour instead:
``z`` [L] -> ``dominant_colour(decoder(z))`` in CIE L*a*b*, the evaluation's colour measure.

Training data come from the shipped decoder and the *train* split only: the posterior mean of
every train photo, and latents drawn as the server draws them (``aggregate`` + ``sample``) for
simulated shoppers built from the train split (one article type, one ``baseColour``, or a
random mix; 1-16 photos; temperatures 0.5-1), each decoded and measured. A tenth of the
shoppers are kept aside for validation; latents of held-out-split shoppers are scored too
(reported, not used).

Writes ``personalize_colour.safetensors`` (fp32: ``layer{i}.weight`` [out, in], ``layer{i}.bias``,
``scale``; read without torch by ``ecomgen.serving.aggregate.load_colour_predictor``) and
``personalize_colour.json`` (command, data, wall time, metrics, machine) into ``--out-dir``.

    python -m training.vae_colour --threads 2      # the shipped run (CPU, a few minutes)
    python -m training.vae_colour --dry-run        # fake data, random tiny VAE, temp dir

The predictor belongs to one decoder: rerun this after ``python -m training.vae``. It records the
VAE checkpoint's sha256, and ``training.vae_eval`` ignores a predictor of another decoder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ecomgen.hostinfo import cpu_model
from ecomgen.models.vae import CHECKPOINT_NAME, VAE, load_vae
from ecomgen.numerics import to_uint8_hwc
from ecomgen.serving.aggregate import aggregate, dominant_colour, load_colour_predictor, sample
from training.data import DEFAULT_PRODUCTS_DIR
from training.paths import CHECKPOINT_DIR, REPO_ROOT
from training.vae import Products, decode, encode, fake_split, load_split

COLOUR_FILE = "personalize_colour.safetensors"
COLOUR_RECORD = "personalize_colour.json"
HIDDEN = 128


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_colours(root: Path) -> dict[int, str]:
    """styles.csv id -> baseColour."""
    with (Path(root) / "styles.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        col_id, col_colour = header.index("id"), header.index("baseColour")
        return {int(r[col_id]): r[col_colour] for r in reader if len(r) > col_colour and r[col_id].isdigit()}


# --- training data ---------------------------------------------------------------


def shopper_histories(
    labels: np.ndarray, colours: list[str], n: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``n`` histories of 1-16 photos: a third of one article type, a third of one colour, a third mixed."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    arr = np.array(colours)
    groups_c = [np.flatnonzero(arr == c) for c in sorted(set(colours) - {""})]
    groups_c = [g for g in groups_c if len(g) >= 2]
    out = []
    for k in range(n):
        size = int(rng.integers(1, 17))
        kind = k % 3
        pool = (
            groups[rng.integers(len(groups))]
            if kind == 0 or not groups_c
            else groups_c[rng.integers(len(groups_c))]
            if kind == 1
            else np.arange(len(labels))
        )
        out.append(rng.choice(pool, min(size, len(pool)), replace=False))
    return out


def served_latents(
    post: tuple[np.ndarray, np.ndarray], histories: list[np.ndarray], per: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per`` latents per history, drawn as the server draws them, at temperatures in [0.5, 1]:
    (latents [S * per, L], shopper index [S * per])."""
    mu, logvar = post
    z, owner = [], []
    for k, h in enumerate(histories):
        t = float(rng.uniform(0.5, 1.0))
        z.append(sample(*aggregate(mu[h], logvar[h]), per, int(rng.integers(0, 2**62)), t))
        owner.append(np.full(per, k))
    return np.concatenate(z), np.concatenate(owner)


def decoded_colours(vae: VAE, z: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """dominant_colour of each decoded latent, quantised to uint8 as served: [N, 3]."""
    out = []
    for i in range(0, len(z), batch_size):
        out.append(dominant_colour(to_uint8_hwc(decode(vae, z[i : i + batch_size]).numpy())))
    return np.concatenate(out)


# --- the predictor ---------------------------------------------------------------


def mlp(latent_dim: int, hidden: int = HIDDEN) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3)
    )


def fit(
    z: np.ndarray, lab: np.ndarray, scale: np.ndarray, steps: int, seed: int
) -> tuple[nn.Sequential, list[float]]:
    """Huber regression of L*a*b* / scale on z (AdamW, cosine learning rate)."""
    torch.manual_seed(seed)
    net = mlp(z.shape[1])
    x, y = torch.from_numpy(z.astype(np.float32)), torch.from_numpy((lab / scale).astype(np.float32))
    optim = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=gen)
        loss = nn.functional.huber_loss(net(x[idx]), y[idx], delta=0.2)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 5))
    return net.eval(), losses


def save_predictor(net: nn.Sequential, scale: np.ndarray, path: Path, meta: dict[str, str]) -> None:
    layers = [m for m in net if isinstance(m, nn.Linear)]
    tensors = {
        f"layer{i}.{k}": getattr(m, k).detach().float().contiguous()
        for i, m in enumerate(layers)
        for k in ("weight", "bias")
    }
    tensors["scale"] = torch.from_numpy(scale.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    path.chmod(0o644)  # readable by a server that runs as another user


def errors(pred: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    """CIE76 error of predicted colours, and R^2 per channel."""
    de = np.sqrt(((pred - lab) ** 2).sum(1))
    r2 = 1 - ((pred - lab) ** 2).sum(0) / ((lab - lab.mean(0)) ** 2).sum(0)
    return {
        "delta_e_mean": round(float(de.mean()), 2),
        "delta_e_median": round(float(np.median(de)), 2),
        "r2_L": round(float(r2[0]), 3),
        "r2_a": round(float(r2[1]), 3),
        "r2_b": round(float(r2[2]), 3),
        "n": len(lab),
    }


# --- main --------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR, help="where the VAE is")
    p.add_argument("--out-dir", type=Path, default=None, help="default: --checkpoint-dir")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_PRODUCTS_DIR)
    p.add_argument("--shoppers", type=int, default=2000, help="simulated train-split shoppers")
    p.add_argument("--per-shopper", type=int, default=10, help="latents drawn per shopper")
    p.add_argument("--steps", type=int, default=4000, help="MLP training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--dry-run", action="store_true", help="fake data, random tiny VAE, temp dir")
    opt = p.parse_args(argv)
    opt.argv = sys.argv[1:] if argv is None else list(argv)
    if opt.dry_run:
        opt.shoppers, opt.per_shopper, opt.steps = 30, 4, 50
        opt.out_dir = opt.out_dir or Path(tempfile.mkdtemp(prefix="personalize_colour_"))
    opt.out_dir = opt.out_dir or opt.checkpoint_dir
    return opt


def load(opt: argparse.Namespace) -> tuple[VAE, Products, list[str], Products, str]:
    if opt.dry_run:
        torch.manual_seed(opt.seed)
        train, held = fake_split(120, 0), fake_split(40, 1)
        return VAE(latent_dim=8, width=4).eval(), train, ["Black", "Red", "White"] * 40, held, "fake"
    vae = load_vae(opt.checkpoint_dir / f"{CHECKPOINT_NAME}.safetensors")
    train, held = load_split(opt.data_dir, "train"), load_split(opt.data_dir, "heldout")
    colours = read_colours(opt.data_dir)
    data_dir = Path(opt.data_dir).resolve()
    shown = data_dir.relative_to(REPO_ROOT.parent) if data_dir.is_relative_to(REPO_ROOT.parent) else data_dir
    desc = f"../{shown} (train split: {len(train)} photos; held-out split {len(held)}, only scored)"
    return vae, train, [colours.get(int(i), "") for i in train.ids], held, desc


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    t0 = time.time()
    vae, train, colours, held, data_desc = load(opt)
    rng = np.random.default_rng(opt.seed)
    post = encode(vae, train.images)
    hist = shopper_histories(train.labels.numpy(), colours, opt.shoppers, rng)
    z_shop, owner = served_latents(post, hist, opt.per_shopper, rng)
    is_val = owner % 10 == 9
    z = np.concatenate([post[0], z_shop[~is_val]])
    t_dec = time.time()
    lab = decoded_colours(vae, z)
    lab_val = decoded_colours(vae, z_shop[is_val])
    post_held = encode(vae, held.images)
    hist_held = shopper_histories(held.labels.numpy(), [""] * len(held), max(opt.shoppers // 10, 3), rng)
    z_held, _ = served_latents(post_held, hist_held, opt.per_shopper, rng)
    lab_held = decoded_colours(vae, z_held)
    decode_s = time.time() - t_dec
    print(
        f"{len(z)} training latents, {len(lab_val)} validation, {len(lab_held)} held-out; "
        f"decoded in {decode_s:.0f} s"
    )

    scale = np.maximum(lab.std(0), 1.0)  # L*a*b* units per output unit
    net, losses = fit(z, lab, scale, opt.steps, opt.seed)
    vae_file = opt.checkpoint_dir / f"{CHECKPOINT_NAME}.safetensors"
    vae_sha = file_sha256(vae_file) if not opt.dry_run else "random (dry run)"
    meta = {
        "latent_dim": str(z.shape[1]),
        "target": "dominant_colour(decoder(z)) in CIE L*a*b* (ecomgen.serving.aggregate)",
        "vae_sha256": vae_sha,
    }
    path = opt.out_dir / COLOUR_FILE
    save_predictor(net, scale, path, meta)
    shipped = load_colour_predictor(path)  # measured as served: numpy, from the file
    metrics = {
        "train": errors(shipped(z), lab),
        "validation_train_split_shoppers": errors(shipped(z_shop[is_val]), lab_val),
        "heldout_split_shoppers": errors(shipped(z_held), lab_held),
    }
    print(json.dumps(metrics, indent=1))
    record = {
        "model": "personalize colour predictor",
        "file": COLOUR_FILE,
        "architecture": f"MLP {z.shape[1]} -> {HIDDEN} -> {HIDDEN} -> 3, SiLU, fp32",
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": shlex.join(["python", "-m", "training.vae_colour", *opt.argv]),
        "vae_checkpoint": f"{vae_file.name} sha256 {vae_sha}",
        "data": data_desc,
        "samples": {
            "train_posterior_means": len(post[0]),
            "served_latents": int((~is_val).sum()),
            "validation": int(is_val.sum()),
            "heldout": len(z_held),
            "shoppers": opt.shoppers,
            "per_shopper": opt.per_shopper,
        },
        "steps": opt.steps,
        "metrics": metrics,
        "wall_time_s": round(time.time() - t0, 1),
        "decode_time_s": round(decode_s, 1),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "losses": losses,
    }
    (opt.out_dir / COLOUR_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path} and {opt.out_dir / COLOUR_RECORD}")


if __name__ == "__main__":
    main()
