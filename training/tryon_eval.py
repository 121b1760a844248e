"""Evaluate try-on on the VITON test split (or on the train hold-out, for the ablations).

Methods, side by side on the same pairs: the shipped model (``checkpoints/``), the previous
model (v1, ``training/tryon_v1.py``, when its checkpoints are placed), pasting the garment
into the torso box of the true parse, and copying the person (not a try-on).

* **Paired** (each person with their own garment, against the real photo): SSIM in the
  pytorch-ssim convention (Gaussian 11x11, sigma 1.5, zero padding, [0, 1] RGB, as CP-VTON,
  ACGPN and PF-AFN report it), SSIM in scikit-image's default convention, PSNR on uint8.
* **Unpaired** (``test_pairs.txt``: each person with another person's garment): FCD, the
  Frechet distance between result and real-photo features of ``training/classifier.py``
  (our product-photo classifier, trained here; no Inception weights offline; the same
  feature space as the previous evaluation, so its numbers stay comparable), with
  real-vs-real floors; garment transfer (does the torso take the new garment's colour?);
  arm and hand preservation (``training.tryon_metrics.arm_preservation``: the exact rule).
* A 4x8 grid of unpaired results chosen by a fixed rule: the pairs at positions
  ``floor(k * n / 32)``, k = 0..31, of the unpaired list (``test_pairs.txt`` order).

    flock /tmp/ecomgen-cpu.lock python -m training.tryon_eval --v1-dir build/tryon_v1   # ~15 min
    python -m training.tryon_eval --limit 64 --out /tmp/tryon_eval                        # quick look
    python -m training.tryon_eval --split val --data-dir data/viton-full --checkpoint-dir D --out O
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ecomgen.hostinfo import machine_description
from ecomgen.models.tryon import pipeline_from_checkpoints
from training.classifier import DEFAULT_CHECKPOINT as CLASSIFIER_CHECKPOINT
from training.classifier import features, load_classifier
from training.metrics import fcd
from training.paths import CHECKPOINT_DIR, REPO_ROOT, RESULTS_DIR
from training.tryon import batch_tensors, save_strip, to_uint8
from training.tryon_metrics import (
    arm_preservation,
    paired_scores,
    paste_baseline,
    sleeve_ends,
    transfer_check,
    u8_to_unit,
)
from training.tryon_v1 import V1_DIR
from training.tryon_v1 import pipeline_from_checkpoints as v1_pipeline
from training.viton import (
    DEFAULT_VITON_DIR,
    FULL_VITON_DIR,
    TryOnData,
    cached_split,
    is_validation,
    pose_path,
    read_pairs,
    read_pose,
)
from training.viton_full import compare_splits

# Published paired SSIM on VITON 256x192 (each paper's own protocol; see the report).
ANCHORS = (
    (
        "CP-VTON (Wang et al., ECCV 2018), as reported by ACGPN",
        0.745,
        "Yang et al., CVPR 2020, arXiv:2003.05863, Table 1",
    ),
    ("CP-VTON+ (Minar et al., CVPRW 2020)", 0.8163, "Minar et al., CVPRW 2020, Table 1"),
    ("ACGPN (Yang et al., CVPR 2020)", 0.845, "Yang et al., CVPR 2020, arXiv:2003.05863, Table 1"),
    ("PF-AFN (Ge et al., CVPR 2021)", 0.89, "Ge et al., CVPR 2021, Table 1"),
    ("FS-VTON (He et al., CVPR 2022)", 0.91, "He et al., CVPR 2022"),
)
GRID_CELLS = (4, 8)  # rows, columns of the unpaired grid
Runner = Callable[[TryOnData, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Method:
    name: str
    run: Runner
    paired: dict[str, list[float]] = field(
        default_factory=lambda: {"ssim": [], "ssim_skimage": [], "psnr": []}
    )
    unpaired: list[np.ndarray] = field(default_factory=list)  # uint8 result batches
    transfer: list[np.ndarray] = field(default_factory=list)  # per pair 1 / 0 / NaN
    arms: list[tuple[int, int]] = field(default_factory=list)  # (preserved, required) per pair


def network_runner(pipe: torch.nn.Module, extra: dict[str, np.ndarray] | None = None) -> Runner:
    """A PyTorch pipeline as a runner; ``extra`` collects the warped garments if given."""

    @torch.no_grad()
    def run(data: TryOnData, idx: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        b = batch_tensors(data, idx, garment_idx=gidx)
        out = pipe(b["person"], b["garment"], b["garment_mask"])
        if extra is not None:
            extra["warped"] = to_uint8(out["warped_garment"])
        return to_uint8(out["image"])

    return run


def paste_runner(data: TryOnData, idx: np.ndarray, gidx: np.ndarray) -> np.ndarray:
    return paste_baseline(data.person[idx], data.cloth[gidx], data.regions[idx])


def copy_runner(data: TryOnData, idx: np.ndarray, gidx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data.person[idx])


@dataclass
class EvalSet:
    """Persons with their own garments (paired) and the unpaired (person, garment-wearer) list."""

    data: TryOnData
    unpaired: list[tuple[int, int | None]]
    poses: np.ndarray  # N x 18 x 3
    description: str


def eval_set(opt: argparse.Namespace) -> EvalSet:
    if opt.split == "val":
        train = cached_split(opt.data_dir, "train")
        held = np.flatnonzero([is_validation(p.person) for p in train.pairs])[: opt.limit]
        data = train.subset(held)
        n = len(data)
        unpaired: list[tuple[int, int | None]] = [(i, (i + 1) % n) for i in range(n)]
        text = f"{_rel(opt.data_dir)}/train hold-out (3% of persons, never trained on): {n} pairs"
    else:
        data = cached_split(opt.data_dir, "test")
        if opt.limit:
            data = data.subset(np.arange(min(opt.limit, len(data))))
        index = {p.person.name: i for i, p in enumerate(data.pairs)}
        unpaired = []
        for pair in read_pairs(opt.data_dir, "test", paired=False)[: opt.limit]:
            wearer = f"{pair.cloth.stem[:-2]}_0.jpg" if pair.cloth.stem.endswith("_1") else None
            unpaired.append((index[pair.person.name], index.get(wearer) if wearer else None))
        text = (
            f"{_rel(opt.data_dir)}/test: {len(data)} paired persons; "
            f"{len(unpaired)} unpaired pairs (test_pairs.txt)"
        )
    poses = np.stack([read_pose(pose_path(p)) for p in data.pairs])
    return EvalSet(data, unpaired, poses, text)


def run_paired(methods: list[Method], es: EvalSet, batch: int) -> None:
    n = len(es.data)
    for start in tqdm(range(0, n, batch), desc="tryon eval paired", unit="batch", mininterval=30):
        idx = np.arange(start, min(start + batch, n))
        real = np.ascontiguousarray(es.data.person[idx])
        for m in methods:
            for k, v in paired_scores(m.run(es.data, idx, idx), real).items():
                m.paired[k] += v.tolist()


def run_unpaired(methods: list[Method], es: EvalSet, batch: int, grid_idx: set[int], grid: dict) -> None:
    """Unpaired results, transfer and arm checks; the grid pairs' images go into ``grid``."""
    d = es.data
    for start in tqdm(
        range(0, len(es.unpaired), batch), desc="tryon eval unpaired", unit="batch", mininterval=30
    ):
        rows = list(range(start, min(start + batch, len(es.unpaired))))
        idx = np.array([es.unpaired[r][0] for r in rows])
        wearers = [es.unpaired[r][1] for r in rows]
        known = np.array([w is not None for w in wearers])
        gidx = np.array([w if w is not None else i for w, i in zip(wearers, idx, strict=True)])
        sleeves = [sleeve_ends(d.regions[w], es.poses[w]) if w is not None else None for w in wearers]
        person = np.ascontiguousarray(d.person[idx])
        for m in methods:
            result = m.run(d, idx, gidx)
            m.unpaired.append(result)
            if known.any():
                own = np.ascontiguousarray(d.cloth[idx[known]])
                new = np.ascontiguousarray(d.cloth[gidx[known]])
                m.transfer.append(
                    transfer_check(result[known], person[known], d.regions[idx[known]], new, own)
                )
            for k, (i, s) in enumerate(zip(idx, sleeves, strict=True)):
                if s is not None:
                    m.arms.append(arm_preservation(result[k], person[k], d.regions[i], es.poses[i], s))
            for k, r in enumerate(rows):
                if r in grid_idx:
                    grid.setdefault(r, {"person": person[k], "garment": d.cloth[gidx[k]]})[m.name] = result[k]


def grid_rows(n: int) -> list[int]:
    cells = GRID_CELLS[0] * GRID_CELLS[1]
    return sorted({(k * n) // cells for k in range(cells)})


def half(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w // 2, h // 2), Image.Resampling.BOX))


def save_grid(grid: dict, method: str, path: Path) -> None:
    """4 x 8 cells; each: the result above the person and the garment at half size."""
    cells = [
        np.concatenate([g[method], np.concatenate([half(g["person"]), half(g["garment"])], axis=1)], axis=0)
        for g in (grid[r] for r in sorted(grid))
    ]
    rows, cols = GRID_CELLS
    cells += [np.full_like(cells[0], 255)] * (rows * cols - len(cells))
    save_strip([cells[r * cols : (r + 1) * cols] for r in range(rows)], path)


def summarise(
    methods: list[Method], feats: Callable[[np.ndarray], np.ndarray], real: np.ndarray
) -> list[dict]:
    rows = []
    for m in methods:
        results = np.concatenate(m.unpaired)
        transfer = np.concatenate(m.transfer) if m.transfer else np.array([np.nan])
        decided = transfer[np.isfinite(transfer)]
        kept, req = (sum(a[i] for a in m.arms) for i in (0, 1))
        rows.append(
            {
                "method": m.name,
                **{k: float(np.mean(v)) for k, v in m.paired.items()},
                "fcd": fcd(feats(results), real),
                "transfer": float(decided.mean()) if decided.size else float("nan"),
                "transfer_n": int(decided.size),
                "arms": kept / req if req else float("nan"),
                "arms_pixels": int(req),
                "arms_pairs": int(sum(1 for a in m.arms if a[1])),
            }
        )
    return rows


def _rel(path: Path) -> str:
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_VITON_DIR)
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument(
        "--v1-dir", type=Path, default=V1_DIR, help="the previous model's checkpoints (skipped if absent)"
    )
    p.add_argument("--classifier", type=Path, default=CLASSIFIER_CHECKPOINT)
    p.add_argument(
        "--full-dir", type=Path, default=FULL_VITON_DIR, help="full VITON set: its test split is compared"
    )
    p.add_argument("--limit", type=int, default=None, help="first N persons only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-baselines", action="store_true", help="only the checkpoint (ablations)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    opt = p.parse_args(argv)
    opt.argv = sys.argv[1:] if argv is None else argv
    return opt


def main(argv: list[str] | None = None) -> dict:
    opt = parse_args(argv)
    torch.set_num_threads(opt.threads)
    started = time.time()
    opt.out.mkdir(parents=True, exist_ok=True)
    es = eval_set(opt)
    warped: dict[str, np.ndarray] = {}
    methods = [
        Method("ecomgen tryon (ours)", network_runner(pipeline_from_checkpoints(opt.checkpoint_dir), warped))
    ]
    if not opt.no_baselines:
        if (opt.v1_dir / "tryon.json").exists():
            methods.append(Method("previous tryon (v1)", network_runner(v1_pipeline(opt.v1_dir))))
        methods += [Method("paste into torso box", paste_runner), Method("copy the person", copy_runner)]
    run_paired(methods, es, opt.batch_size)
    grid: dict = {}
    run_unpaired(methods, es, opt.batch_size, set(grid_rows(len(es.unpaired))), grid)

    classifier = load_classifier(opt.classifier)

    def feats(images: np.ndarray) -> np.ndarray:
        small = F.interpolate(u8_to_unit(images) * 2 - 1, size=(64, 48), mode="area")
        return features(classifier, small)

    real = feats(np.ascontiguousarray(es.data.person))
    half = len(real) // 2
    floors = {"halves": fcd(real[:half], real[half:]) if half >= 2 else float("nan")}
    if opt.split == "test" and (opt.data_dir / "train").is_dir():
        train = cached_split(opt.data_dir, "train")
        floors["train"] = fcd(feats(np.ascontiguousarray(train.person[: opt.limit or len(es.data)])), real)
    rows = summarise(methods, feats, real)
    report = {
        "command": ("python -m training.tryon_eval " + shlex.join(opt.argv)).strip(),
        "machine": machine_description(),
        "threads": torch.get_num_threads(),
        "data": es.description,
        "rows": rows,
        "floors": floors,
        "n_paired": len(es.data),
        "n_unpaired": len(es.unpaired),
        "checkpoint": json.loads((opt.checkpoint_dir / "tryon.json").read_text()),
        "test_split_check": compare_splits(opt.full_dir, opt.data_dir) if opt.split == "test" else None,
        "wall_s": round(time.time() - started, 1),
    }
    (opt.out / f"tryon_eval{'' if opt.split == 'test' else '_val'}.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    if opt.split == "test":
        write_images(methods, grid, opt.out)
        (opt.out / "tryon_eval.md").write_text(markdown(report))
    print(json.dumps(rows, indent=2))
    return report


def write_images(methods: list[Method], grid: dict, out: Path) -> None:
    save_grid(grid, methods[0].name, out / "tryon_unpaired_grid.png")
    names = [m.name for m in methods if m.name != "copy the person"]
    picks = sorted(grid)[:: max(1, len(grid) // 8)][:8]
    save_strip(
        [[grid[r]["person"], grid[r]["garment"], *(grid[r][n] for n in names)] for r in picks],
        out / "tryon_eval.png",
    )


def markdown(r: dict) -> str:
    from training.tryon_report import render

    return render(r)


if __name__ == "__main__":
    main()
