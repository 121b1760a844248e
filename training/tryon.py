"""tryon: parser-free-at-serving virtual try-on at 256x192, trained on VITON.

Four networks (``ecomgen/models/tryon.py``), each its own ONNX model and Triton step,
trained in four stages; each stage trains one network on the frozen predictions of the
earlier ones, exactly what it sees when served:

1. **parser**: person -> 5 regions (cross-entropy on the LIP parse merged into regions).
2. **layout** (ACGPN-style): clothing-agnostic person + garment -> garment / skin / other
   inside the fused upper-body region (cross-entropy on the person's own parse).
3. **warp**: TPS (5x5 control points) + a coarse-to-fine appearance-flow refinement. L1 on the
   warped mask and garment against the worn garment region (also on the TPS stage alone),
   a feature loss, and PF-AFN's second-order smoothness on the flow (plus a small TV term).
4. **synthesis** + a PatchGAN discriminator: L1 + (1 - SSIM) + a feature loss against the
   photo on paired pairs; the hinge GAN loss on paired *and* unpaired results (the person
   with another garment of the batch), so the unpaired try-ons themselves are pushed towards
   real photos. Arm augmentation: with probability ``--arm-drop``, the arm pixels within a
   random distance of the worn garment are removed from what the person photo keeps, so
   the network learns to draw skin where a new garment has shorter sleeves.

No pretrained weights: the feature loss uses the encoder of the parser trained in stage 1
(on VITON train parses), and the discriminator is trained here.

The data root defaults to ``../shared/data/viton`` (3,000 train pairs); the full VITON set
(14,221 train pairs, placed by ``python -m training.viton_full``) is ``--data-dir
data/viton-full``. A stable 3% of the train persons (``training.viton.is_validation``) is
held out of training for the ablations (``training.tryon_ablate``); the test split is never
trained on. Each split is decoded once into ``build/viton_cache``.

    flock /tmp/ecomgen-cpu.lock python -m training.tryon --data-dir data/viton-full   # shipped
    python -m training.tryon --dataset fake --dry-run                                 # smoke test
    python -m training.tryon --stages warp --init-from DIR ...   # one stage on frozen others
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from scipy.ndimage import distance_transform_edt
from torch import nn
from torch.nn.utils import spectral_norm

from ecomgen.models.tryon import (
    ARMS,
    DEFAULT_WIDTHS,
    GRID_SAMPLE,
    L_GARMENT,
    L_OTHER,
    L_SKIN,
    LAYOUT_CLASSES,
    NETWORKS,
    REGIONS,
    UPPER,
    TryOnPipeline,
    Warp,
    agnostic,
    body_region,
    build,
    save_checkpoints,
    save_network,
)
from ecomgen.numerics import to_uint8_hwc
from training.image_metrics import ssim
from training.paths import CHECKPOINT_DIR, REPO_ROOT
from training.viton import DEFAULT_VITON_DIR, TryOnData, cached_split, fake_tryon, is_validation

# --- losses ----------------------------------------------------------------------


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Total variation of the flow (first differences, L1)."""
    dx = (flow[:, :, :, 1:] - flow[:, :, :, :-1]).abs().mean()
    dy = (flow[:, :, 1:] - flow[:, :, :-1]).abs().mean()
    return dx + dy


def second_order_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """PF-AFN's second-order constraint: neighbouring displacements stay collinear (L1 of the
    discrete second derivative along x and y), computed at half resolution."""
    f = F.avg_pool2d(flow, 2)
    dxx = f[:, :, :, 2:] - 2 * f[:, :, :, 1:-1] + f[:, :, :, :-2]
    dyy = f[:, :, 2:] - 2 * f[:, :, 1:-1] + f[:, :, :-2]
    return dxx.abs().mean() + dyy.abs().mean()


def feature_loss(parser: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the frozen parser encoder's activations (1/2, 1/4, 1/8 scale) of a and b."""
    with torch.no_grad():
        fb = parser.features(b)
    return sum((fa - fb_).abs().mean() for fa, fb_ in zip(parser.features(a), fb, strict=True))  # type: ignore[return-value]


class PatchDiscriminator(nn.Module):
    """PatchGAN (70x70-style receptive field at 256x192), spectral norm, hinge loss."""

    def __init__(self, base: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, (cout, stride) in enumerate(((base, 2), (2 * base, 2), (4 * base, 2), (4 * base, 1))):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride, 1)), nn.LeakyReLU(0.2, inplace=i > 0)]
            cin = cout
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- data ------------------------------------------------------------------------


def batch_tensors(
    data: TryOnData, idx: np.ndarray, flip: bool = False, garment_idx: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """uint8 arrays -> the tensors the server's preprocessing produces (+ region targets).

    ``garment_idx``: take the garments of these pairs instead (unpaired try-on).
    """
    gidx = idx if garment_idx is None else garment_idx
    person = torch.from_numpy(np.ascontiguousarray(data.person[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1
    cloth = torch.from_numpy(np.ascontiguousarray(data.cloth[gidx])).permute(0, 3, 1, 2).float() / 127.5 - 1
    mask = torch.from_numpy(data.garment_masks(gidx))[:, None]
    regions = torch.from_numpy(np.ascontiguousarray(data.regions[idx])).long()
    out = {"person": person, "garment": cloth, "garment_mask": mask, "regions": regions}
    if flip:  # the same horizontal flip for person and garment keeps the pair consistent
        out = {k: v.flip(-1) for k, v in out.items()}
    return out


def layout_target(regions: torch.Tensor) -> torch.Tensor:
    """Regions -> layout classes: upper clothes -> garment, arms -> skin, the rest -> other."""
    target = torch.full_like(regions, L_OTHER)
    target[regions == UPPER] = L_GARMENT
    target[regions == ARMS] = L_SKIN
    return target


def arm_drop(regions: torch.Tensor, rng: np.random.Generator, p: float, max_px: int) -> torch.Tensor | None:
    """N x 1 x H x W: the arm pixels within a random distance (4..max_px) of the worn garment,
    for a random share ``p`` of the batch (the rest: none)."""
    if p <= 0:
        return None
    reg = regions.numpy()
    out = np.zeros((reg.shape[0], 1, *reg.shape[1:]), np.float32)
    for i in range(reg.shape[0]):
        arms = reg[i] == ARMS
        if rng.random() >= p or not arms.any() or not (reg[i] == UPPER).any():
            continue
        dist = distance_transform_edt(reg[i] != UPPER)
        out[i, 0] = arms & (dist <= rng.integers(4, max_px + 1))
    return torch.from_numpy(out)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return to_uint8_hwc(x.detach().numpy())


def save_strip(rows: list[list[np.ndarray]], path: Path) -> None:
    """rows of HxWx3 uint8 images -> one PNG grid."""
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


@torch.no_grad()
def sample_grid(pipe: TryOnPipeline, data: TryOnData, path: Path, idx: np.ndarray) -> None:
    """person | garment | warped | paired result | other garment | unpaired result (rows: ``idx``,
    the held-out train pairs in training)."""
    pipe.eval()
    b = batch_tensors(data, idx)
    u = batch_tensors(data, idx, garment_idx=np.roll(idx, 1))
    out = pipe(b["person"], b["garment"], b["garment_mask"])
    uout = pipe(u["person"], u["garment"], u["garment_mask"])
    cols = [b["person"], b["garment"], out["warped_garment"], out["image"], u["garment"], uout["image"]]
    arrays = [to_uint8(c) for c in cols]
    save_strip([[c[i] for c in arrays] for i in range(len(idx))], path)


# --- stages ----------------------------------------------------------------------

Batch = dict[str, torch.Tensor]


class Stage:
    """One network's training loop: AdamW with a one-cycle LR over ``iters`` steps.

    With ``budget_s`` the first ``CALIBRATION`` steps (at the one-cycle start LR) time the
    iteration, and the schedule is then fitted to what the budget allows (at most ``iters``):
    on a shared CPU the iteration time is only known once training runs.
    """

    CALIBRATION = 10

    def __init__(
        self, name: str, module: nn.Module, opt: argparse.Namespace, iters: int, budget_s: float | None = None
    ) -> None:
        self.name, self.module, self.opt, self.iters, self.budget_s = name, module, opt, iters, budget_s
        self.optim = torch.optim.AdamW(module.parameters(), lr=opt.lr / 25, weight_decay=1e-4)
        self.sched: torch.optim.lr_scheduler.LRScheduler | None = None
        if budget_s is None:
            self.schedule(iters)

    def schedule(self, total: int) -> None:
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.optim, max_lr=self.opt.lr, total_steps=max(total, 20), pct_start=0.1
        )

    def calibrated(self, done: int, elapsed: float) -> None:
        """After ``done`` calibration steps in ``elapsed`` s: fit the rest of the run to the budget."""
        assert self.budget_s is not None
        rest = int((self.budget_s - elapsed) / (elapsed / done))
        self.iters = max(done + 20, min(self.iters, done + rest))
        self.schedule(self.iters - done)

    def step(self, loss: torch.Tensor) -> None:
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        if self.sched is not None:
            self.sched.step()


def frozen(*modules: nn.Module) -> None:
    for m in modules:
        m.eval()
        for q in m.parameters():
            q.requires_grad_(False)


def run_stage(
    stage: Stage, batches: Callable[[], Batch], loss_fn: Callable[[Batch], dict[str, torch.Tensor]]
) -> dict:
    """Train ``stage`` for its iterations; the loss function returns named terms incl. 'loss'."""
    stage.module.train()
    log: list[dict[str, float]] = []
    start = time.time()
    it = 0
    while it < stage.iters:
        it += 1
        terms = loss_fn(batches())
        stage.step(terms["loss"])
        log.append({k: float(v.detach()) for k, v in terms.items()})
        if stage.budget_s is not None and it == Stage.CALIBRATION:
            stage.calibrated(it, time.time() - start)
            print(
                f"tryon {stage.name}: {stage.iters} iterations fit {stage.budget_s / 60:.0f} min", flush=True
            )
        if it % 100 == 0:
            rate = (time.time() - start) / it
            terms_text = " ".join(f"{k}={v:.3f}" for k, v in log[-1].items())
            print(f"tryon {stage.name} {it}/{stage.iters} {rate:.2f} s/it {terms_text}", flush=True)
    stage.module.eval()
    tail = log[-100:]
    return {
        "iters": stage.iters,
        "wall_time_s": round(time.time() - start, 1),
        "final_mean_last100": {k: float(np.mean([r[k] for r in tail])) for k in tail[0]} if tail else {},
    }


def parser_loss(pipe: TryOnPipeline) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def fn(b: Batch) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(pipe.parser.logits(b["person"]), b["regions"])}

    return fn


def thicken_arms(parse: torch.Tensor, max_px: int, rng: np.random.Generator) -> torch.Tensor:
    """The parse with each sample's arms grown by a random 0..max_px px (layout augmentation).

    In paired training a sleeve is wider than a bare arm, so the width of the fused region
    would tell the layout where the worn sleeve ends; random thickening takes that shortcut
    away, and the sleeve length has to come from the garment.
    """
    if max_px <= 0:
        return parse
    out = parse.clone()
    for i in range(parse.shape[0]):
        r = int(rng.integers(0, max_px + 1))
        out[i, ARMS] = F.max_pool2d(parse[i : i + 1, ARMS], 2 * r + 1, 1, r)[0]
    return out


def layout_loss(
    pipe: TryOnPipeline, opt: argparse.Namespace, rng: np.random.Generator
) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """Cross-entropy inside the fused region (predicted, and the true one, both grown)."""

    def fn(b: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            parse = thicken_arms(pipe.parser(b["person"]), opt.thicken_arms, rng)
        target = layout_target(b["regions"])
        true_region = ((b["regions"] == UPPER) | (b["regions"] == ARMS)).float()[:, None]
        weight = torch.maximum(body_region(parse), F.max_pool2d(true_region, 5, 1, 2))[:, 0]
        ce = F.cross_entropy(
            pipe.layout.logits(b["person"], parse, b["garment"], b["garment_mask"]), target, reduction="none"
        )
        return {"loss": (ce * weight).sum() / weight.sum().clamp_min(1)}

    return fn


def warp_loss(pipe: TryOnPipeline, opt: argparse.Namespace) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """Warped mask and garment against the worn garment region; TPS stage too; smoothness."""

    def fn(b: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            parse = pipe.parser(b["person"])
            layout = pipe.layout(b["person"], parse, b["garment"], b["garment_mask"])
        target = (b["regions"] == UPPER).float()[:, None]
        worn = b["person"] * target
        warped, wmask, flow, tps = pipe.warp(
            b["garment"], b["garment_mask"], agnostic(b["person"], parse), layout
        )
        fit = F.l1_loss(wmask, target) + F.l1_loss(warped, worn)
        terms = {"fit": fit}
        if opt.warp_mode != "flow":
            moved = Warp.sample(torch.cat([b["garment"] * b["garment_mask"], b["garment_mask"]], 1), tps)
            terms["tps"] = F.l1_loss(moved[:, 3:], target) + F.l1_loss(moved[:, :3], worn)
        if opt.warp_feat:
            terms["feat"] = opt.warp_feat * feature_loss(pipe.parser, warped, worn)
        if opt.warp_mode == "flow":  # the old warp's first-order total variation
            terms["smooth"] = opt.smooth * flow_smoothness(flow)
        else:
            terms["smooth"] = opt.smooth2 * second_order_smoothness(flow) + opt.tv * flow_smoothness(
                flow - tps
            )
        terms["loss"] = fit + 0.5 * terms.get("tps", 0) + terms.get("feat", 0) + terms["smooth"]
        return terms

    return fn


def synthesis_loss(
    pipe: TryOnPipeline, disc: PatchDiscriminator | None, opt: argparse.Namespace, rng: np.random.Generator
) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """Paired reconstruction + feature loss; hinge GAN on paired and unpaired results."""
    d_optim = torch.optim.Adam(disc.parameters(), lr=opt.lr_d, betas=(0.0, 0.99)) if disc else None

    def frozen_steps(b: Batch, garment: torch.Tensor, gmask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            layout = pipe.layout(b["person"], b["parse"], garment, gmask)
            warped, wmask, _, _ = pipe.warp(garment, gmask, agnostic(b["person"], b["parse"]), layout)
        return layout, warped, wmask

    def fn(b: Batch) -> dict[str, torch.Tensor]:
        person = b["person"]
        with torch.no_grad():
            b["parse"] = pipe.parser(person)
        layout, warped, wmask = frozen_steps(b, b["garment"], b["garment_mask"])
        drop = arm_drop(b["regions"], rng, opt.arm_drop, opt.arm_drop_px)
        out = pipe.synthesis(person, b["parse"], layout, warped, wmask, drop)
        image = out["image"]
        recon = F.l1_loss(image, person)
        s = 1 - ssim(image, person).mean()
        terms = {"l1": recon, "ssim": 1 - s}
        loss = (
            recon + s + opt.mask_reg * ((1 - out["m"]) * wmask * layout[:, L_GARMENT : L_GARMENT + 1]).mean()
        )
        if opt.feat:
            terms["feat"] = feature_loss(pipe.parser, image, person)
            loss = loss + opt.feat * terms["feat"]
        if disc is not None and d_optim is not None:
            roll = torch.roll(torch.arange(person.shape[0]), 1)
            ul, uw, um = frozen_steps(b, b["garment"][roll], b["garment_mask"][roll])
            unpaired = pipe.synthesis(person, b["parse"], ul, uw, um)["image"]
            fakes = torch.cat([image, unpaired])
            d_loss = F.relu(1 - disc(person)).mean() + F.relu(1 + disc(fakes.detach())).mean()
            d_optim.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optim.step()
            for q in disc.parameters():
                q.requires_grad_(False)
            terms["adv"] = -disc(fakes).mean()
            for q in disc.parameters():
                q.requires_grad_(True)
            terms["d"] = d_loss.detach()
            loss = loss + opt.adv * terms["adv"]
        terms["loss"] = loss
        return terms

    return fn


# --- main ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["viton", "fake"], default="viton")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_VITON_DIR)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training pairs")
    p.add_argument("--stages", default=",".join(NETWORKS), help="which networks to train, in order")
    p.add_argument("--init-from", type=Path, default=None, help="checkpoint dir for the networks not trained")
    p.add_argument("--parser-iters", type=int, default=3000)
    p.add_argument("--layout-iters", type=int, default=2500)
    p.add_argument("--warp-iters", type=int, default=3000)
    p.add_argument("--synthesis-iters", type=int, default=4000)
    p.add_argument(
        "--minutes", type=float, default=None, help="wall-time budget per stage: fits the iterations to it"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle AdamW)")
    p.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate (Adam)")
    for name, width in DEFAULT_WIDTHS.items():
        p.add_argument(f"--{name}-width", type=int, default=width)
    p.add_argument("--warp-mode", choices=["tps+flow", "tps", "flow"], default="tps+flow")
    p.add_argument("--smooth", type=float, default=2.0, help="first-order TV weight (warp mode 'flow')")
    p.add_argument("--smooth2", type=float, default=20.0, help="second-order smoothness weight")
    p.add_argument("--tv", type=float, default=0.5, help="TV weight on the refinement flow")
    p.add_argument("--warp-feat", type=float, default=0.2, help="warp feature-loss weight")
    p.add_argument("--thicken-arms", type=int, default=10, help="layout augmentation: arms grown 0..N px")
    p.add_argument("--finetune", action="store_true", help="start the trained stages from --init-from too")
    p.add_argument("--feather", type=int, default=2, help="keep-mask feather (px, 0 = hard)")
    p.add_argument("--no-keep-arms", action="store_true", help="old rule: arms always replaced")
    p.add_argument("--arm-drop", type=float, default=0.5, help="share of samples with arms removed")
    p.add_argument("--arm-drop-px", type=int, default=96)
    p.add_argument("--feat", type=float, default=0.5, help="synthesis feature-loss weight (0 = off)")
    p.add_argument("--adv", type=float, default=0.01, help="GAN loss weight (0 = no discriminator)")
    p.add_argument("--mask-reg", type=float, default=0.1, help="composition-mask regulariser weight")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "tryon")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--dry-run", action="store_true", help="a few steps, no checkpoint")
    opt = p.parse_args(argv)
    opt.stages = [s for s in opt.stages.split(",") if s]
    if unknown := set(opt.stages) - set(NETWORKS):
        p.error(f"unknown stages {sorted(unknown)}")
    return opt


def training_data(opt: argparse.Namespace) -> tuple[TryOnData, np.ndarray, np.ndarray]:
    """The train split (memory-mapped), the indices trained on and the held-out indices."""
    if opt.dataset == "fake":
        data = fake_tryon(16, opt.seed)
        return data, np.arange(len(data)), np.arange(min(4, len(data)))
    data = cached_split(opt.data_dir, "train")
    held = np.array([is_validation(pair.person) for pair in data.pairs])
    return data, np.flatnonzero(~held)[: opt.limit], np.flatnonzero(held)


def build_pipe(opt: argparse.Namespace) -> tuple[TryOnPipeline, dict]:
    """The pipeline to train: fresh networks for the stages, the others from ``--init-from``
    where it has them (else random, and neither saved nor sampled)."""
    record: dict = {}
    widths = {n: getattr(opt, f"{n}_width") for n in NETWORKS}
    synthesis = {"feather_px": opt.feather, "keep_arms": not opt.no_keep_arms}
    loaded = []
    if opt.init_from is not None:
        record = json.loads((opt.init_from / "tryon.json").read_text())
        loaded = [
            n
            for n in NETWORKS
            if (n not in opt.stages or opt.finetune) and (opt.init_from / f"tryon_{n}.safetensors").exists()
        ]
        for n in loaded:
            widths[n] = record["widths"][n]
        if "warp" in loaded:
            opt.warp_mode = record.get("warp_mode", opt.warp_mode)
        if "synthesis" in loaded:
            synthesis = record.get("synthesis", synthesis)
    pipe = build(widths, opt.warp_mode, **synthesis)
    for n in loaded:
        state = load_file(str(opt.init_from / f"tryon_{n}.safetensors"))
        getattr(pipe, n).load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    stages = {n: r for n, r in record.get("stages", {}).items() if n in loaded}
    opt.finetuned_from = {n: stages[n] for n in opt.stages if n in stages}
    meta = {"widths": widths, "warp_mode": opt.warp_mode, "synthesis": synthesis, "stages": stages}
    if missing := [n for n in NETWORKS if n not in loaded and n not in opt.stages]:
        print(f"untrained (random, not saved): {missing}")
    return pipe.eval(), meta


def train(
    opt: argparse.Namespace,
    pipe: TryOnPipeline,
    data: TryOnData,
    index: np.ndarray,
    held: np.ndarray,
    meta: dict,
) -> None:
    rng = np.random.default_rng(opt.seed)

    def batches() -> Batch:
        return batch_tensors(data, np.sort(rng.choice(index, opt.batch_size)), flip=bool(rng.random() < 0.5))

    command = ("python -m training.tryon " + shlex.join(opt.argv)).strip()
    data_note = f"{_rel(opt.data_dir)} (train split less the 3% hold-out: {len(index)} pairs)"
    for name in opt.stages:
        frozen(*(getattr(pipe, n) for n in NETWORKS))
        module = getattr(pipe, name)
        for q in module.parameters():
            q.requires_grad_(True)
        iters = getattr(opt, f"{name}_iters")
        if name == "synthesis":
            loss = synthesis_loss(pipe, PatchDiscriminator() if opt.adv > 0 else None, opt, rng)
        else:
            loss = {
                "parser": lambda: parser_loss(pipe),
                "layout": lambda: layout_loss(pipe, opt, rng),
                "warp": lambda: warp_loss(pipe, opt),
            }[name]()
        budget = opt.minutes * 60 if opt.minutes else None
        result = run_stage(Stage(name, module, opt, iters, budget), batches, loss)
        print(f"{name}: {result}")
        meta["stages"][name] = {"command": command, "data": data_note, **result}
        if name in opt.finetuned_from:  # the record of the run this one continued
            meta["stages"][name]["finetuned_from"] = opt.finetuned_from[name]
        save_network(module, opt.out / f"tryon_{name}.safetensors")
        if set(meta["stages"]) == set(NETWORKS):
            sample_grid(pipe, data, opt.out / f"samples_{name}.png", held[:6])


def _rel(path: Path) -> str:
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    opt.argv = sys.argv[1:] if argv is None else argv
    print(opt)
    if opt.dry_run:
        for n in NETWORKS:
            setattr(opt, f"{n}_iters", 2)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    opt.out.mkdir(parents=True, exist_ok=True)
    data, index, held = training_data(opt)
    pipe, meta = build_pipe(opt)
    for name in NETWORKS:
        print(f"{name}: {sum(q.numel() for q in getattr(pipe, name).parameters()) / 1e6:.2f}M params")
    started = time.time()
    train(opt, pipe, data, index, held, meta)
    print(f"trained {opt.stages} in {(time.time() - started) / 60:.1f} min")
    if opt.dry_run:
        return
    meta.update(
        {
            "model": "tryon",
            "networks": list(NETWORKS),
            "resolution": [int(data.person.shape[1]), int(data.person.shape[2])],
            "regions": list(REGIONS),
            "layout_classes": list(LAYOUT_CLASSES),
            "grid_sample": GRID_SAMPLE,
            "batch_size": opt.batch_size,
            "wall_time_s": round(sum(s.get("wall_time_s", 0) for s in meta["stages"].values()), 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "weights": "fp16 safetensors, BatchNorm in eval mode",
            "licence": "research only: trained on VITON (Han et al., CVPR 2018; Zalando images)",
        }
    )
    save_checkpoints(pipe, opt.checkpoint_dir, meta, [n for n in NETWORKS if n in meta["stages"]])
    if set(meta["stages"]) == set(NETWORKS):
        sample_grid(pipe, data, opt.checkpoint_dir / "tryon_samples.png", held[:8])
    print(f"wrote {opt.checkpoint_dir}/tryon_*.safetensors")


if __name__ == "__main__":
    main()
