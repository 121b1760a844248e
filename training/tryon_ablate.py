"""Try-on ablations on short schedules, scored on the train hold-out (never the test split).

Two studies, each a set of variants trained from the same frozen earlier stages:

* ``warp``: the previous flow-only warp (first-order TV) / TPS only / TPS + flow refinement
  with the second-order smoothness constraint. Scored on the held-out persons with their own
  garments: IoU of the warped mask with the worn garment region, L1 and SSIM of the warped
  garment against the worn garment inside that region, and the share of fold-overs (pixels of
  the region where the sampling grid's Jacobian determinant is negative).
* ``synthesis`` (cumulative): the previous keep rule (arms replaced, hard mask, L1 + SSIM) ->
  layout keep (arms kept) + arm augmentation -> feathered keep mask -> + feature loss ->
  + PatchGAN on paired and unpaired results. Scored by ``training.tryon_eval --split val``.

    L="flock /tmp/ecomgen-cpu.lock"
    $L python -m training.tryon_ablate --study warp --init-from runs/tryon/stage-layout
    $L python -m training.tryon_ablate --study synthesis --init-from runs/tryon/stage-warp

Writes ``training/results/tryon_ablation.{md,json}`` (each study's section is replaced).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ecomgen.hostinfo import machine_description
from ecomgen.models.tryon import NETWORKS, UPPER, TryOnPipeline, agnostic, build
from training import tryon, tryon_eval
from training.image_metrics import ssim
from training.paths import REPO_ROOT, RESULTS_DIR
from training.tryon import batch_tensors
from training.viton import FULL_VITON_DIR, cached_split, is_validation

WARP_VARIANTS = {
    "flow only, first-order TV (v1's warp)": ["--warp-mode", "flow"],
    "TPS only": ["--warp-mode", "tps"],
    "TPS + flow refinement, second-order smoothness": ["--warp-mode", "tps+flow"],
}
SYNTHESIS_VARIANTS = {
    "v1 keep rule (arms replaced), hard mask, L1 + SSIM": [
        "--no-keep-arms", "--feather", "0", "--arm-drop", "0", "--feat", "0", "--adv", "0",
    ],
    "+ layout keep (arms kept) + arm augmentation": ["--feather", "0", "--feat", "0", "--adv", "0"],
    "+ feathered keep mask (soft edges)": ["--feat", "0", "--adv", "0"],
    "+ feature loss (parser encoder)": ["--adv", "0"],
    "+ PatchGAN (paired and unpaired results)": [],
}  # fmt: skip


def load_available(directory: Path) -> TryOnPipeline:
    """The networks a stage directory has (the rest random): enough to score a warp."""
    meta = json.loads((directory / "tryon.json").read_text())
    pipe = build(meta["widths"], meta.get("warp_mode", "tps+flow"), **meta.get("synthesis", {}))
    for n in NETWORKS:
        path = directory / f"tryon_{n}.safetensors"
        if path.exists():
            getattr(pipe, n).load_state_dict(
                {k: v.float() for k, v in load_file(str(path)).items()}, strict=False
            )
    return pipe.eval()


def fold_share(flow: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of region pixels where the sampling map (identity + flow, in pixels) folds over."""
    _, _, h, w = flow.shape
    gx = flow[:, 0] * w / 2 + torch.arange(w, dtype=flow.dtype)
    gy = flow[:, 1] * h / 2 + torch.arange(h, dtype=flow.dtype)[:, None]
    dxdx, dydx = gx[:, :-1, 1:] - gx[:, :-1, :-1], gy[:, :-1, 1:] - gy[:, :-1, :-1]
    dxdy, dydy = gx[:, 1:, :-1] - gx[:, :-1, :-1], gy[:, 1:, :-1] - gy[:, :-1, :-1]
    det = dxdx * dydy - dxdy * dydx
    r = region[:, 0, :-1, :-1]
    return ((det < 0).float() * r).sum() / r.sum().clamp_min(1)


@torch.no_grad()
def warp_scores(directory: Path, data_dir: Path, limit: int, batch: int = 16) -> dict[str, float]:
    pipe = load_available(directory)
    train = cached_split(data_dir, "train")
    held = np.flatnonzero([is_validation(p.person) for p in train.pairs])[:limit]
    sums = {"iou": 0.0, "l1": 0.0, "ssim": 0.0, "folds": 0.0}
    for start in range(0, len(held), batch):
        b = batch_tensors(train, held[start : start + batch])
        parse = pipe.parser(b["person"])
        layout = pipe.layout(b["person"], parse, b["garment"], b["garment_mask"])
        warped, wmask, flow, _ = pipe.warp(
            b["garment"], b["garment_mask"], agnostic(b["person"], parse), layout
        )
        t = (b["regions"] == UPPER).float()[:, None]
        pred = (wmask > 0.5).float()
        inter, union = (pred * t).sum((1, 2, 3)), ((pred + t) > 0).float().sum((1, 2, 3))
        n = len(t)
        sums["iou"] += float((inter / union.clamp_min(1)).sum())
        worn = b["person"] * t
        sums["l1"] += float(
            ((warped * t - worn).abs().sum((1, 2, 3)) / (3 * t.sum((1, 2, 3)).clamp_min(1))).sum()
        )
        sums["ssim"] += float(ssim(warped * t, worn).sum())
        sums["folds"] += float(fold_share(flow, t)) * n
    return {k: v / len(held) for k, v in sums.items()}


def run_variant(opt: argparse.Namespace, number: int, name: str, flags: list[str]) -> dict:
    stage = opt.study
    out = opt.runs / stage / f"variant{number}"
    args = ["--data-dir", str(opt.data_dir), "--stages", stage, "--init-from", str(opt.init_from)]
    args += [f"--{stage}-iters", str(opt.iters), "--out", str(out), "--checkpoint-dir", str(out), *flags]
    if opt.minutes:
        args += ["--minutes", str(opt.minutes)]
    started = time.time()
    tryon.main(args)
    wall = time.time() - started
    iters = json.loads((out / "tryon.json").read_text())["stages"][stage]["iters"]
    if stage == "warp":
        scores = warp_scores(out, opt.data_dir, opt.val)
    else:
        flags = ["--split", "val", "--data-dir", str(opt.data_dir), "--checkpoint-dir", str(out)]
        report = tryon_eval.main([*flags, "--limit", str(opt.val), "--no-baselines", "--out", str(out)])
        scores = {k: v for k, v in report["rows"][0].items() if k != "method"}
    return {
        "variant": name,
        "command": ("python -m training.tryon " + shlex.join(args)).replace(f"{REPO_ROOT}/", ""),
        "train_wall_s": round(wall, 1),
        "iters": iters,
        **scores,
    }


def markdown(study: str, rows: list[dict], meta: dict) -> str:
    head = [
        f"## {study} ({meta['iters']} iterations each, batch 8; {meta['val']} held-out train persons)",
        "",
    ]
    head += [f"`{meta['command']}` on {meta['machine']}, {meta['date']}.", ""]
    if study == "warp":
        head += [
            "| variant | iterations | mask IoU | L1 in region | SSIM (masked) | fold-overs | train min |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        body = [
            f"| {r['variant']} | {r['iters']} | {r['iou']:.3f} | {r['l1']:.4f} | {r['ssim']:.4f} | "
            f"{r['folds']:.2%} | {r['train_wall_s'] / 60:.1f} |"
            for r in rows
        ]
    else:
        head += [
            "| variant | iterations | SSIM (pytorch-ssim) | SSIM (skimage) | PSNR | unpaired FCD | transfer "
            "| arm + hand | train min |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        body = [
            f"| {r['variant']} | {r['iters']} | {r['ssim']:.4f} | {r['ssim_skimage']:.4f} | "
            f"{r['psnr']:.2f} | {r['fcd']:.2f} | {r['transfer']:.1%} | {r['arms']:.1%} | "
            f"{r['train_wall_s'] / 60:.1f} |"
            for r in rows
        ]
    cmds = ["", "Commands:", ""] + [f"- {r['variant']}: `{r['command']}`" for r in rows]
    return "\n".join(head + body + cmds) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=["warp", "synthesis"], required=True)
    p.add_argument("--init-from", type=Path, required=True, help="stage directory with the frozen networks")
    p.add_argument("--data-dir", type=Path, default=FULL_VITON_DIR)
    p.add_argument("--iters", type=int, default=500, help="iterations per variant (at most, with --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget per variant's training")
    p.add_argument("--val", type=int, default=256, help="held-out train persons scored")
    p.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "tryon" / "ablate")
    p.add_argument("--only", default=None, help="comma-separated variant numbers (0-based)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    opt = p.parse_args(argv)
    variants = WARP_VARIANTS if opt.study == "warp" else SYNTHESIS_VARIANTS
    items = list(enumerate(variants.items()))
    if opt.only:
        items = [items[int(i)] for i in opt.only.split(",")]
    rows = [run_variant(opt, i, name, flags) for i, (name, flags) in items]
    meta = {
        "iters": opt.iters,
        "val": opt.val,
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m training.tryon_ablate " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    opt.out.mkdir(parents=True, exist_ok=True)
    path = opt.out / "tryon_ablation.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[opt.study] = {"meta": meta, "rows": rows}
    path.write_text(json.dumps(results, indent=2) + "\n")
    sections = [
        markdown(s, results[s]["rows"], results[s]["meta"]) for s in ("warp", "synthesis") if s in results
    ]
    (opt.out / "tryon_ablation.md").write_text(
        "# tryon: ablations (train hold-out)\n\n" + "\n".join(sections)
    )
    print((opt.out / "tryon_ablation.md").read_text())


if __name__ == "__main__":
    main()
