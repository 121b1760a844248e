"""tryon: parser-free-at-serving virtual try-on at 256x192, trained on VITON.

Three networks, each its own ONNX model and Triton step:

* **parser** (U-Net): person photo -> 5 region probabilities (background, head, upper
  clothes, arms, lower body), trained on the LIP parse maps merged into those regions.
* **warp** (appearance flow, PF-AFN / DM-VTON style without correlation layers): garment,
  its mask and the person representation -> a dense flow, refined coarse to fine;
  ``grid_sample`` (bilinear, zeros padding, align_corners=False) warps the garment and its
  mask onto the person.
* **synthesis** (U-Net): renders the image and a composition mask m;
  ``warped*m + render*(1-m)``, then the regions to keep (head, lower body, background) are
  pasted back from the person photo.

The person representation never shows the worn garment's exact outline: the upper-body
region is blurred to a coarse body-shape blob (as CP-VTON does), so the warp learns from
the body, not from the old garment's silhouette. Losses need no pretrained weights:
cross-entropy (parser); L1 on the warped mask and garment plus flow smoothness (warp);
L1 + SSIM on the image plus a mask regulariser (synthesis).

Training runs in two phases: the parser first, then warp + synthesis on the frozen
parser's predictions, which is exactly what they see when served.

    python -m training.tryon                           # full run (CPU, ~45 min)
    python -m training.tryon --dataset fake --dry-run  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from ecomgen.models.tryon import (
    GRID_SAMPLE,
    NETWORKS,
    REGIONS,
    UPPER,
    TryOnPipeline,
    build,
    person_representation,
    save_checkpoints,
)
from ecomgen.numerics import to_uint8_hwc
from ecomgen.serving.handlers.tryon import garment_mask
from training.image_metrics import ssim
from training.paths import CHECKPOINT_DIR, REPO_ROOT
from training.viton import DEFAULT_VITON_DIR, TryOnData, fake_tryon, load_split

# --- losses ----------------------------------------------------------------------


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Total variation of the flow (first differences, L1)."""
    dx = (flow[:, :, :, 1:] - flow[:, :, :, :-1]).abs().mean()
    dy = (flow[:, :, 1:] - flow[:, :, :-1]).abs().mean()
    return dx + dy


# --- data ------------------------------------------------------------------------


def batch_tensors(data: TryOnData, idx: np.ndarray, flip: bool = False) -> dict[str, torch.Tensor]:
    """uint8 arrays -> the tensors the server's preprocessing produces (+ region targets)."""
    person = torch.from_numpy(data.person[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    cloth_u8 = data.cloth[idx]
    cloth = torch.from_numpy(cloth_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    mask = torch.from_numpy(np.stack([garment_mask(c) for c in cloth_u8]))[:, None]
    regions = torch.from_numpy(data.regions[idx]).long()
    out = {"person": person, "garment": cloth, "garment_mask": mask, "regions": regions}
    if flip:  # the same horizontal flip for person and garment keeps the pair consistent
        out = {k: v.flip(-1) for k, v in out.items()}
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return to_uint8_hwc(x.detach().numpy())


def save_strip(rows: list[list[np.ndarray]], path: Path) -> None:
    """rows of HxWx3 uint8 images -> one PNG grid."""
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


@torch.no_grad()
def sample_grid(pipe: TryOnPipeline, data: TryOnData, path: Path, n: int = 6) -> None:
    pipe.eval()
    b = batch_tensors(data, np.arange(min(n, len(data))))
    out = pipe(b["person"], b["garment"], b["garment_mask"])
    cols = [
        to_uint8(b["person"]),
        to_uint8(b["garment"]),
        to_uint8(out["warped_garment"]),
        to_uint8(out["image"]),
    ]
    save_strip([[c[i] for c in cols] for i in range(cols[0].shape[0])], path)


# --- training --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["viton", "fake"], default="viton")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_VITON_DIR)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training pairs")
    p.add_argument("--parser-iters", type=int, default=1200)
    p.add_argument("--tryon-iters", type=int, default=2400, help="warp + synthesis steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle AdamW)")
    p.add_argument("--parser-width", type=int, default=16)
    p.add_argument("--warp-width", type=int, default=16)
    p.add_argument("--synthesis-width", type=int, default=24)
    p.add_argument("--smooth", type=float, default=2.0, help="flow smoothness weight")
    p.add_argument("--mask-reg", type=float, default=0.1, help="composition-mask regulariser weight")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "tryon")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--sample-every", type=int, default=400)
    p.add_argument(
        "--parser-from",
        type=Path,
        default=None,
        help="reuse the parser of a checkpoint directory (its tryon.json records how it was trained); "
        "skips phase 1",
    )
    p.add_argument("--dry-run", action="store_true", help="a few steps, no checkpoint")
    opt = p.parse_args(argv)
    print(opt)
    parser_record = None
    if opt.parser_from is not None:
        parser_record = json.loads((opt.parser_from / "tryon.json").read_text())
        opt.parser_width = parser_record["widths"]["parser"]
        parser_state = load_file(str(opt.parser_from / "tryon_parser.safetensors"))
    if opt.dry_run:
        opt.parser_iters, opt.tryon_iters, opt.sample_every = 2, 2, 2
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    rng = np.random.default_rng(opt.seed)
    opt.out.mkdir(parents=True, exist_ok=True)

    data = (
        fake_tryon(16, opt.seed)
        if opt.dataset == "fake"
        else load_split(opt.data_dir, "train", limit=opt.limit)
    )
    n = len(data)
    print(f"{n} training pairs at {data.person.shape[1]}x{data.person.shape[2]}")
    widths = {"parser": opt.parser_width, "warp": opt.warp_width, "synthesis": opt.synthesis_width}
    pipe = build(widths)
    if parser_record is not None:
        pipe.parser.load_state_dict({k: v.float() for k, v in parser_state.items()}, strict=False)
        opt.parser_iters = 0
    for name in NETWORKS:
        print(f"{name}: {sum(q.numel() for q in getattr(pipe, name).parameters()) / 1e6:.2f}M params")

    def batch() -> dict[str, torch.Tensor]:
        return batch_tensors(data, rng.integers(0, n, opt.batch_size), flip=bool(rng.random() < 0.5))

    def optimiser(params: list[nn.Parameter], iters: int) -> tuple[torch.optim.Optimizer, object]:
        o = torch.optim.AdamW(params, lr=opt.lr, weight_decay=1e-4)
        s = torch.optim.lr_scheduler.OneCycleLR(o, max_lr=opt.lr, total_steps=max(iters, 2), pct_start=0.1)
        return o, s

    log: list[dict[str, float]] = []
    start = time.time()

    # Phase 1: the parser.
    pipe.parser.train()
    o, s = optimiser(list(pipe.parser.parameters()), opt.parser_iters)
    bar = tqdm(range(1, opt.parser_iters + 1), desc="tryon parser", dynamic_ncols=True)
    for it in bar:
        b = batch()
        loss = F.cross_entropy(pipe.parser.logits(b["person"]), b["regions"])
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        s.step()  # type: ignore[attr-defined]
        log.append({"phase": 1, "iter": it, "ce": loss.item()})
        bar.set_postfix(ce=f"{loss.item():.3f}")
    parser_wall = time.time() - start

    # Phase 2: warp + synthesis on the frozen parser's predictions.
    pipe.parser.eval()
    for q in pipe.parser.parameters():
        q.requires_grad_(False)
    pipe.warp.train()
    pipe.synthesis.train()
    o, s = optimiser(list(pipe.warp.parameters()) + list(pipe.synthesis.parameters()), opt.tryon_iters)
    bar = tqdm(range(1, opt.tryon_iters + 1), desc="tryon warp+synthesis", dynamic_ncols=True)
    for it in bar:
        b = batch()
        with torch.no_grad():
            parse = pipe.parser(b["person"])
        target_mask = (b["regions"] == UPPER).float()[:, None]
        warped, warped_mask, flow = pipe.warp(
            b["garment"], b["garment_mask"], person_representation(b["person"], parse)
        )
        loss_warp = (
            F.l1_loss(warped_mask, target_mask)
            + F.l1_loss(warped, b["person"] * target_mask)
            + opt.smooth * flow_smoothness(flow)
        )
        image, m, _ = pipe.synthesis(b["person"], parse, warped, warped_mask)
        loss_ssim = 1 - ssim(image, b["person"]).mean()
        loss_synth = (
            F.l1_loss(image, b["person"]) + loss_ssim + opt.mask_reg * ((1 - m) * warped_mask.detach()).mean()
        )
        loss = loss_warp + loss_synth
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        s.step()  # type: ignore[attr-defined]
        rec = {
            "phase": 2,
            "iter": it,
            "warp": loss_warp.item(),
            "synth": loss_synth.item(),
            "ssim": 1 - loss_ssim.item(),
        }
        log.append(rec)
        bar.set_postfix(warp=f"{rec['warp']:.3f}", ssim=f"{rec['ssim']:.3f}")
        if it % opt.sample_every == 0 or it == opt.tryon_iters:
            sample_grid(pipe, data, opt.out / f"samples_{it:06d}.png")
            pipe.warp.train()
            pipe.synthesis.train()
            torch.save({"pipe": pipe.state_dict(), "iter": it, "widths": widths}, opt.out / "last.pt")

    wall = time.time() - start
    pipe.eval()
    print(f"trained in {wall / 60:.1f} min (parser {parser_wall / 60:.1f} min)")
    if opt.dry_run:
        return

    tail1 = [r["ce"] for r in log if r["phase"] == 1][-100:]
    if parser_record is not None:  # the parser comes from an earlier run: keep its record
        parser_wall = parser_record.get("parser_wall_time_s", float("nan"))
        wall += parser_wall
        opt.parser_iters = parser_record.get("parser_iters")
        tail1 = [parser_record.get("final_parser_ce_mean_last100") or float("nan")]
    tail2 = [r for r in log if r["phase"] == 2][-100:]
    meta = {
        "model": "tryon",
        "networks": list(NETWORKS),
        "widths": widths,
        "resolution": [int(data.person.shape[1]), int(data.person.shape[2])],
        "regions": list(REGIONS),
        "grid_sample": GRID_SAMPLE,
        "command": ("python -m training.tryon " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        "data": f"{os.path.relpath(opt.data_dir.resolve(), REPO_ROOT)} (train split: {n} pairs)",
        "parser_iters": opt.parser_iters,
        "parser_from": (
            None
            if parser_record is None
            else {"command": parser_record.get("command"), "dir": str(opt.parser_from)}
        ),
        "tryon_iters": opt.tryon_iters,
        "batch_size": opt.batch_size,
        "wall_time_s": round(wall, 1),
        "parser_wall_time_s": round(parser_wall, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "final_parser_ce_mean_last100": float(np.mean(tail1)) if tail1 else None,
        "final_train_ssim_mean_last100": float(np.mean([r["ssim"] for r in tail2])) if tail2 else None,
        "weights": "fp16 safetensors, BatchNorm in eval mode",
        "licence": "research only: trained on VITON (Han et al., CVPR 2018; Zalando images)",
    }
    save_checkpoints(pipe, opt.checkpoint_dir, meta)
    sample_grid(pipe, data, opt.checkpoint_dir / "tryon_samples.png", n=8)
    (opt.out / "log.json").write_text(json.dumps(log))
    print(f"wrote {opt.checkpoint_dir}/tryon_*.safetensors")


if __name__ == "__main__":
    main()
