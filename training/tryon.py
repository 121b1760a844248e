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
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from export.triton_python.tryon_common import garment_mask
from training.viton import (
    ARMS,
    BACKGROUND,
    DEFAULT_VITON_DIR,
    HEAD,
    LOWER,
    REGIONS,
    REPO_ROOT,
    UPPER,
    TryOnData,
    fake_tryon,
    load_split,
)

NUM_REGIONS = len(REGIONS)
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
NETWORKS = ("parser", "warp", "synthesis")
# The warp's grid_sample settings; export and the parity test check the same ones.
GS_MODE, GS_PADDING, GS_ALIGN_CORNERS = "bilinear", "zeros", False
GRID_SAMPLE = {"mode": GS_MODE, "padding_mode": GS_PADDING, "align_corners": GS_ALIGN_CORNERS}
# Coarse body shape: the replaced region pooled over this many pixels.
SHAPE_POOL = 16
# The replaced region is grown by this many pixels before the person photo is masked.
GROW = 2


# --- models ----------------------------------------------------------------------


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class UNet(nn.Module):
    """Stride-2 stem (the networks work at 128x96), ``depth`` downsamplings, skip connections.

    Returns the decoder features at every scale, coarse to fine, so heads can read any.
    BatchNorm is exported in eval mode: a request never depends on its batch neighbours.
    """

    def __init__(self, cin: int, base: int, depth: int = 4) -> None:
        super().__init__()
        widths = [base * min(2**i, 8) for i in range(depth + 1)]
        self.stem = nn.Sequential(conv_bn(cin, base, 2), conv_bn(base, base))
        self.down = nn.ModuleList(
            nn.Sequential(conv_bn(widths[i], widths[i + 1], 2), conv_bn(widths[i + 1], widths[i + 1]))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            nn.Sequential(conv_bn(widths[i + 1] + widths[i], widths[i]), conv_bn(widths[i], widths[i]))
            for i in reversed(range(depth))
        )
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        outs = [y]
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=skip.shape[2:], mode="nearest"), skip], 1))
            outs.append(y)
        return outs  # coarse -> fine; the last is at half resolution


class Parser(nn.Module):
    """person [-1, 1] -> region probabilities (softmax), full resolution."""

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        self.unet = UNet(3, base)
        self.head = nn.Conv2d(base, NUM_REGIONS, 3, 1, 1)

    def logits(self, person: torch.Tensor) -> torch.Tensor:
        y = self.head(self.unet(person)[-1])
        return F.interpolate(y, size=person.shape[2:], mode="bilinear", align_corners=False)

    def forward(self, person: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(person), dim=1)


def keep_mask(parse: torch.Tensor) -> torch.Tensor:
    """1 where the person photo is kept (background, head, lower body), else 0: a hard mask.

    Hard, not the soft probabilities: a soft keep of 0.05 over the worn garment passes an
    attenuated copy of it, which the networks learn to amplify (paired training rewards
    copying), and the garment never changes in unpaired try-on.
    """
    keep = parse[:, BACKGROUND : BACKGROUND + 1] + parse[:, HEAD : HEAD + 1] + parse[:, LOWER : LOWER + 1]
    return (keep > 0.5).to(parse.dtype)


def person_representation(person: torch.Tensor, parse: torch.Tensor) -> torch.Tensor:
    """What warp and synthesis see of the person: 3 + 4 channels.

    The kept pixels (head, lower body, background) with the replaced region, grown by
    ``GROW`` pixels, greyed out; the head and lower-body probabilities; the kept region;
    and a blurred blob of the replaced region (body shape, not the old garment's outline).
    """
    keep = keep_mask(parse)
    # Grown so parser edge errors do not leak a ring of the worn garment's colour.
    visible = 1 - F.max_pool2d(1 - keep, 2 * GROW + 1, stride=1, padding=GROW)
    replace = parse[:, UPPER : UPPER + 1] + parse[:, ARMS : ARMS + 1]
    shape = F.interpolate(
        F.avg_pool2d(replace, SHAPE_POOL), size=person.shape[2:], mode="bilinear", align_corners=False
    )
    return torch.cat(
        [person * visible, parse[:, HEAD : HEAD + 1], parse[:, LOWER : LOWER + 1], keep, shape], 1
    )


REPR_CHANNELS = 7


def identity_grid(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre sampling grid for align_corners=False, N x H x W x 2 in [-1, 1]."""
    ys = (torch.arange(h, dtype=like.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=like.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).unsqueeze(0).expand(n, h, w, 2)


class Warp(nn.Module):
    """Appearance flow: (garment, mask, person repr) -> flow; warps garment and mask.

    Flow heads at three decoder scales; each finer flow is the upsampled coarser flow plus
    a residual (coarse-to-fine refinement, as in PF-AFN, without the correlation layers).
    Returns the warped garment, warped mask and the full-resolution flow (N x 2 x H x W,
    in normalised grid units).
    """

    def __init__(self, base: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.unet = UNet(3 + 1 + REPR_CHANNELS, base, depth)
        widths = list(reversed(self.unet.widths))  # coarse -> fine decoder widths
        self.flow_levels = (2, 3, 4)  # indices into the decoder outputs: 1/16, 1/8 ... 1/2 scale
        heads = [nn.Conv2d(widths[i], 2, 3, 1, 1) for i in self.flow_levels]
        for head in heads:  # start at the identity warp
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)  # type: ignore[arg-type]
        self.heads = nn.ModuleList(heads)

    def forward(
        self, garment: torch.Tensor, mask: torch.Tensor, person_repr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.unet(torch.cat([garment * mask, mask, person_repr], 1))
        flow = torch.zeros_like(feats[self.flow_levels[0]][:, :2])
        for level, head in zip(self.flow_levels, self.heads, strict=True):
            f = feats[level]
            flow = F.interpolate(flow, size=f.shape[2:], mode="bilinear", align_corners=False) + 0.1 * head(f)
        n, _, h, w = garment.shape
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        grid = identity_grid(n, h, w, garment) + flow.permute(0, 2, 3, 1)
        warped = F.grid_sample(
            garment * mask, grid, mode=GS_MODE, padding_mode=GS_PADDING, align_corners=GS_ALIGN_CORNERS
        )
        warped_mask = F.grid_sample(
            mask, grid, mode=GS_MODE, padding_mode=GS_PADDING, align_corners=GS_ALIGN_CORNERS
        )
        return warped, warped_mask, flow


class Synthesis(nn.Module):
    """(person, parse, warped garment, warped mask) -> the try-on image in [-1, 1].

    Also returns the composition mask m and the render, for the losses and debugging.
    """

    def __init__(self, base: int = 24) -> None:
        super().__init__()
        self.unet = UNet(REPR_CHANNELS + 3 + 1, base)
        self.head = nn.Conv2d(base, 4, 3, 1, 1)
        # Full-resolution refinement: the half-resolution render plus full-res inputs.
        self.refine = nn.Sequential(
            nn.Conv2d(4 + REPR_CHANNELS + 3 + 1, 16, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 4, 3, 1, 1),
        )

    def forward(
        self, person: torch.Tensor, parse: torch.Tensor, warped: torch.Tensor, warped_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.cat([person_representation(person, parse), warped, warped_mask], 1)
        y = F.interpolate(
            self.head(self.unet(x)[-1]), size=person.shape[2:], mode="bilinear", align_corners=False
        )
        y = y + self.refine(torch.cat([y, x], 1))
        render, m = torch.tanh(y[:, :3]), torch.sigmoid(y[:, 3:])
        composed = warped * m + render * (1 - m)
        keep = keep_mask(parse)
        return person * keep + composed * (1 - keep), m, render


class TryOnPipeline(nn.Module):
    """The PyTorch reference of the served ensemble: tensors as tryon_pre produces them."""

    def __init__(self, parser: Parser, warp: Warp, synthesis: Synthesis) -> None:
        super().__init__()
        self.parser, self.warp, self.synthesis = parser, warp, synthesis

    def forward(
        self, person: torch.Tensor, garment: torch.Tensor, garment_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parse = self.parser(person)
        warped, warped_mask, _ = self.warp(garment, garment_mask, person_representation(person, parse))
        image, m, _ = self.synthesis(person, parse, warped, warped_mask)
        return {"image": image, "warped_garment": warped, "mask": m, "parse": parse}


class WarpStep(nn.Module):
    """The served warp step: the spec's tensors in (person repr built inside), warped pair out."""

    def __init__(self, warp: Warp) -> None:
        super().__init__()
        self.warp = warp

    def forward(
        self, garment: torch.Tensor, garment_mask: torch.Tensor, person: torch.Tensor, parse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        warped, warped_mask, _ = self.warp(garment, garment_mask, person_representation(person, parse))
        return warped, warped_mask


class SynthesisStep(nn.Module):
    def __init__(self, synthesis: Synthesis) -> None:
        super().__init__()
        self.synthesis = synthesis

    def forward(
        self, person: torch.Tensor, parse: torch.Tensor, warped: torch.Tensor, warped_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, m, _ = self.synthesis(person, parse, warped, warped_mask)
        return image, m


def export_modules(pipe: TryOnPipeline) -> dict[str, nn.Module]:
    """Network spec name -> the module exported for that Triton step (inputs in spec order)."""
    return {
        "tryon_parser": pipe.parser.eval(),
        "tryon_warp": WarpStep(pipe.warp).eval(),
        "tryon_synthesis": SynthesisStep(pipe.synthesis).eval(),
    }


# --- losses ----------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, padding: int = 0) -> torch.Tensor:
    """Mean SSIM per image, Gaussian 11x11 window, sigma 1.5 (Wang et al. 2004).

    ``padding=5`` with ``data_range=1`` on [0, 1] images is pytorch-ssim's convention, which
    the VITON papers report (ACGPN's README: window 11, images / 255).
    """
    c = a.shape[1]
    window = _gaussian_window().to(a).expand(c, 1, 11, 11)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=padding, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))


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


# --- checkpoints -----------------------------------------------------------------


def build(widths: dict[str, int]) -> TryOnPipeline:
    return TryOnPipeline(Parser(widths["parser"]), Warp(widths["warp"]), Synthesis(widths["synthesis"]))


def pipeline_from_checkpoints(directory: Path = CHECKPOINT_DIR) -> TryOnPipeline:
    """Load the three shipped fp16 checkpoints into an fp32 eval-mode pipeline."""
    meta = json.loads((directory / "tryon.json").read_text())
    pipe = build(meta["widths"])
    for name in NETWORKS:
        path = directory / f"tryon_{name}.safetensors"
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        missing, unexpected = getattr(pipe, name).load_state_dict(state, strict=False)
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise ValueError(f"{path}: does not match {name}: {missing=} {unexpected=}")
    return pipe.eval()


def save_checkpoints(pipe: TryOnPipeline, directory: Path, meta: dict) -> None:
    """fp16 safetensors per network plus ``tryon.json`` (which must hold ``widths``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in NETWORKS:
        state = getattr(pipe, name).state_dict()
        save_file(
            {k: v.half().contiguous() for k, v in state.items() if v.is_floating_point()},
            str(directory / f"tryon_{name}.safetensors"),
        )
    (directory / "tryon.json").write_text(json.dumps(meta, indent=2) + "\n")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(-1, 1).add(1).mul(127.5).add(0.5)).to(torch.uint8).permute(0, 2, 3, 1).numpy()


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
