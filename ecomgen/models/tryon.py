"""tryon's networks (256x192): parser, layout, TPS + flow warp, synthesis.

* **parser** (U-Net): person photo -> 5 region probabilities (background, head, upper
  clothes, arms, lower body).
* **layout** (U-Net, ACGPN-style semantic layout generation): the clothing-agnostic person
  (upper clothes and arms fused into one body region, so the old sleeve length is hidden)
  and the garment -> what each pixel of that region becomes once the new garment is worn:
  garment, skin (arms, hands) or other (background).
* **warp** (PF-AFN / SDAFN-style): a thin-plate spline (5x5 control points, regressed from
  the garment and the target layout) aligns the garment globally, then an appearance flow,
  refined coarse to fine from the TPS-warped garment, corrects it locally; ``grid_sample``
  (bilinear, zeros padding, align_corners=False) applies it.
* **synthesis** (U-Net): renders what no photo shows (new skin where a sleeve got shorter,
  background where the garment got narrower, shading) and a mask m that picks the warped
  garment or the render. The person photo is kept everywhere except the old garment (grown
  by ``GROW`` px) and the new garment's layout region, so arms and hands stay where they
  were; the keep mask is feathered inwards over ``FEATHER`` px, so edges are soft but the
  worn garment never shows through.

Each is its own ONNX model and Triton step; ``export_modules`` adapts them to the step
tensors the served spec declares. BatchNorm is exported in eval mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ecomgen.models import randomize_batchnorm

# The networks' step names: the served spec (ecomgen.specs.tryon) reads them.
PARSER, LAYOUT, WARP, SYNTHESIS = "tryon_parser", "tryon_layout", "tryon_warp", "tryon_synthesis"
REGIONS = ("background", "head", "upper", "arms", "lower")
BACKGROUND, HEAD, UPPER, ARMS, LOWER = range(len(REGIONS))
NUM_REGIONS = len(REGIONS)
# What the layout predicts inside the replaceable region (old garment + arms, grown).
LAYOUT_CLASSES = ("garment", "skin", "other")
L_GARMENT, L_SKIN, L_OTHER = range(len(LAYOUT_CLASSES))
NUM_LAYOUT = len(LAYOUT_CLASSES)
NETWORKS = ("parser", "layout", "warp", "synthesis")
DEFAULT_WIDTHS = {"parser": 16, "layout": 16, "warp": 16, "synthesis": 24}
# The warp's grid_sample settings; export and the parity test check the same ones.
GS_MODE, GS_PADDING, GS_ALIGN_CORNERS = "bilinear", "zeros", False
GRID_SAMPLE = {"mode": GS_MODE, "padding_mode": GS_PADDING, "align_corners": GS_ALIGN_CORNERS}
# The old garment is grown by this many pixels before the person photo is masked, so parser
# edge errors do not leak a ring of its colour.
GROW = 2
# The keep mask is eroded by FEATHER px, then box-blurred over 2*FEATHER+1: soft over a band
# of 2*FEATHER px inside the kept region, exactly 0 outside it.
FEATHER = 2
# TPS control points per side; the TPS displacement is computed on a coarse grid and upsampled.
TPS_GRID, TPS_RES = 5, (64, 48)


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

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        return skips  # fine -> coarse

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = self.encode(x)
        y = skips.pop()
        outs = [y]
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=skip.shape[2:], mode="nearest"), skip], 1))
            outs.append(y)
        return outs  # coarse -> fine; the last is at half resolution


def _full(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(y, size=like.shape[2:], mode="bilinear", align_corners=False)


class Parser(nn.Module):
    """person [-1, 1] -> region probabilities (softmax), full resolution."""

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        self.unet = UNet(3, base)
        self.head = nn.Conv2d(base, NUM_REGIONS, 3, 1, 1)

    def logits(self, person: torch.Tensor) -> torch.Tensor:
        return _full(self.head(self.unet(person)[-1]), person)

    def forward(self, person: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(person), dim=1)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder activations at 1/2, 1/4 and 1/8 scale: the feature loss's feature space."""
        return self.unet.encode(image)[:3]


# --- masks shared by the layout, warp and synthesis ------------------------------------


def grow(mask: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * px + 1, stride=1, padding=px) if px else mask


def erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    return 1 - grow(1 - mask, px)


def hard(p: torch.Tensor) -> torch.Tensor:
    return (p > 0.5).to(p.dtype)


def channel(x: torch.Tensor, i: int) -> torch.Tensor:
    return x[:, i : i + 1]


def body_region(parse: torch.Tensor) -> torch.Tensor:
    """The replaceable region: upper clothes and arms fused, hard, grown by ``GROW`` px."""
    return grow(hard(channel(parse, UPPER) + channel(parse, ARMS)), GROW)


def agnostic(person: torch.Tensor, parse: torch.Tensor) -> torch.Tensor:
    """The person photo with the replaceable region greyed out (the layout's and warp's view).

    Upper clothes and arms are fused (their soft sum), so the old sleeve's end is not visible.
    """
    region = body_region(parse)
    fused = channel(parse, UPPER) + channel(parse, ARMS)
    return torch.cat([person * (1 - region), channel(parse, HEAD), channel(parse, LOWER), fused], 1)


AGNOSTIC_CHANNELS = 6


def keep_mask(
    parse: torch.Tensor, layout: torch.Tensor, drop: torch.Tensor | None = None, keep_arms: bool = True
) -> torch.Tensor:
    """1 where the person photo is kept, hard: all but the old garment (grown by ``GROW``) and
    the new garment's layout region (inside the replaceable region).

    ``keep_arms=False`` is the old rule (arms always replaced), kept for the ablation; ``drop``
    removes more pixels (training's arm augmentation).
    """
    replace = grow(hard(channel(parse, UPPER)), GROW)
    region = body_region(parse)
    replace = torch.maximum(replace, hard(channel(layout, L_GARMENT)) * region)
    if not keep_arms:
        replace = torch.maximum(replace, region)
    if drop is not None:
        replace = torch.maximum(replace, drop)
    return 1 - replace


def feather(keep: torch.Tensor, px: int = FEATHER) -> torch.Tensor:
    """Soft edges inside the kept region only: 0 wherever ``keep`` is 0 (no old garment leaks)."""
    if not px:
        return keep
    return F.avg_pool2d(erode(keep, px), 2 * px + 1, stride=1, padding=px, count_include_pad=False)


# --- layout ---------------------------------------------------------------------------


class Layout(nn.Module):
    """(agnostic person, garment, garment mask) -> layout probabilities (garment, skin, other)."""

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        self.unet = UNet(AGNOSTIC_CHANNELS + 4, base)
        self.head = nn.Conv2d(base, NUM_LAYOUT, 3, 1, 1)

    def logits(
        self, person: torch.Tensor, parse: torch.Tensor, garment: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = torch.cat([agnostic(person, parse), garment * mask, mask], 1)
        return _full(self.head(self.unet(x)[-1]), person)

    def forward(
        self, person: torch.Tensor, parse: torch.Tensor, garment: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Probabilities inside the replaceable region; "other" (1) outside it."""
        region = body_region(parse)
        probs = torch.softmax(self.logits(person, parse, garment, mask), dim=1)
        other = torch.zeros_like(probs)
        other[:, L_OTHER] = 1
        return probs * region + other * (1 - region)


# --- warp -----------------------------------------------------------------------------


def identity_grid(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre sampling grid for align_corners=False, N x H x W x 2 in [-1, 1]."""
    ys = (torch.arange(h, dtype=like.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=like.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).unsqueeze(0).expand(n, h, w, 2)


def tps_basis(k: int = TPS_GRID, size: tuple[int, int] = TPS_RES) -> torch.Tensor:
    """(H*W) x K matrix B such that the TPS displacement at every pixel is ``B @ offsets``.

    Control points on a k x k grid over [-0.9, 0.9]^2; the spline interpolates the given
    offsets at them, with U(r) = r^2 log r^2. Linear in the offsets, so it is a constant
    matrix: no linear solve at run time (exported as one MatMul).
    """
    t = np.linspace(-0.9, 0.9, k)
    cy, cx = np.meshgrid(t, t, indexing="ij")
    ctrl = np.stack([cx.ravel(), cy.ravel()], 1)  # K x 2 (x, y)

    def u(d2: np.ndarray) -> np.ndarray:
        return np.where(d2 > 0, d2 * np.log(np.maximum(d2, 1e-12)), 0.0)

    n = k * k
    lmat = np.zeros((n + 3, n + 3))
    lmat[:n, :n] = u(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    lmat[:n, n] = 1
    lmat[:n, n + 1 :] = ctrl
    lmat[n, :n] = 1
    lmat[n + 1 :, :n] = ctrl.T
    inv = np.linalg.inv(lmat)[:, :n]  # (K+3) x K: only the offsets are non-zero on the right
    h, w = size
    ys, xs = (np.arange(h) * 2 + 1) / h - 1, (np.arange(w) * 2 + 1) / w - 1
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    basis = np.concatenate([u(((pts[:, None] - ctrl[None]) ** 2).sum(-1)), np.ones((h * w, 1)), pts], 1)
    return torch.from_numpy(basis @ inv).float()


class Warp(nn.Module):
    """(garment, mask, person agnostic + layout) -> warped garment, warped mask, flow.

    ``tps``: a global TPS from an encoder of the inputs (zero-initialised: starts at the
    identity). ``refine``: a U-Net on the TPS-warped garment and the target layout whose flow
    heads at three scales add residuals coarse to fine. ``flow`` (N x 2 x H x W, normalised
    grid units) is the total displacement; ``tps_only``/``flow_only`` are the ablations.
    """

    def __init__(self, base: int = 16, mode: str = "tps+flow") -> None:
        super().__init__()
        if mode not in ("tps+flow", "tps", "flow"):
            raise ValueError(f"warp mode {mode!r}")
        self.mode = mode
        cin = 4 + NUM_LAYOUT + AGNOSTIC_CHANNELS
        self.tps_encoder = nn.Sequential(
            conv_bn(cin, base, 2), conv_bn(base, 2 * base, 2), conv_bn(2 * base, 4 * base, 2),
            conv_bn(4 * base, 4 * base, 2), conv_bn(4 * base, 8 * base, 2),
        )  # fmt: skip
        self.tps_head = nn.Linear(8 * base, 2 * TPS_GRID * TPS_GRID)
        nn.init.zeros_(self.tps_head.weight)
        nn.init.zeros_(self.tps_head.bias)
        self.register_buffer("basis", tps_basis(), persistent=False)
        self.refine = UNet(cin, base)
        widths = list(reversed(self.refine.widths))  # coarse -> fine decoder widths
        self.flow_levels = (2, 3, 4)  # decoder outputs at 1/8, 1/4 and 1/2 scale
        heads = [nn.Conv2d(widths[i], 2, 3, 1, 1) for i in self.flow_levels]
        for head in heads:  # start at the identity warp
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)  # type: ignore[arg-type]
        self.heads = nn.ModuleList(heads)

    def tps_flow(self, x: torch.Tensor) -> torch.Tensor:
        """N x 2 x H x W TPS displacement (normalised units) at full resolution."""
        n = x.shape[0]
        code = self.tps_encoder(x).mean(dim=(2, 3))
        offsets = 0.1 * self.tps_head(code).view(n, TPS_GRID * TPS_GRID, 2)
        basis: torch.Tensor = self.basis  # type: ignore[assignment]
        coarse = torch.matmul(basis, offsets).view(n, *TPS_RES, 2).permute(0, 3, 1, 2)
        return F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)

    @staticmethod
    def sample(src: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        n, _, h, w = src.shape
        grid = identity_grid(n, h, w, src) + flow.permute(0, 2, 3, 1)
        return F.grid_sample(src, grid, mode=GS_MODE, padding_mode=GS_PADDING, align_corners=GS_ALIGN_CORNERS)

    def forward(
        self, garment: torch.Tensor, mask: torch.Tensor, person_agnostic: torch.Tensor, layout: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> warped garment (masked), warped mask, total flow, TPS flow."""
        src = torch.cat([garment * mask, mask], 1)
        target = torch.cat([layout, person_agnostic], 1)
        if self.mode == "flow":
            tps = garment.new_zeros(garment.shape[0], 2, *garment.shape[2:])
        else:
            tps = self.tps_flow(torch.cat([src, target], 1))
        flow = tps
        if self.mode != "tps":
            moved = src if self.mode == "flow" else self.sample(src, tps)
            feats = self.refine(torch.cat([moved, target], 1))
            res = torch.zeros_like(feats[self.flow_levels[0]][:, :2])
            for level, head in zip(self.flow_levels, self.heads, strict=True):
                f = feats[level]
                res = F.interpolate(res, size=f.shape[2:], mode="bilinear", align_corners=False) + 0.1 * head(
                    f
                )
            flow = tps + _full(res, garment)
        out = self.sample(src, flow)
        return out[:, :3], out[:, 3:], flow, tps


# --- synthesis ------------------------------------------------------------------------


class Synthesis(nn.Module):
    """(person, parse, layout, warped garment, warped mask) -> the try-on image in [-1, 1].

    ``image = a * person + (1 - a) * (m * warped + (1 - m) * render)`` with ``a`` the feathered
    keep mask. Also returns the garment's share of the image ((1 - a) * m), the render and a.
    """

    def __init__(self, base: int = 24, feather_px: int = FEATHER, keep_arms: bool = True) -> None:
        super().__init__()
        self.feather_px, self.keep_arms = feather_px, keep_arms
        cin = 3 + 1 + NUM_LAYOUT + 3 + 1
        self.unet = UNet(cin, base)
        self.head = nn.Conv2d(base, 4, 3, 1, 1)
        # Full-resolution refinement: the half-resolution output plus the full-res inputs.
        self.refine = nn.Sequential(
            nn.Conv2d(4 + cin, 16, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 4, 3, 1, 1),
        )

    def forward(
        self,
        person: torch.Tensor,
        parse: torch.Tensor,
        layout: torch.Tensor,
        warped: torch.Tensor,
        warped_mask: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        keep = keep_mask(parse, layout, drop, self.keep_arms)
        x = torch.cat([person * keep, keep, layout, warped, warped_mask], 1)
        y = _full(self.head(self.unet(x)[-1]), person)
        y = y + self.refine(torch.cat([y, x], 1))
        render, m = torch.tanh(y[:, :3]), torch.sigmoid(y[:, 3:])
        a = feather(keep, self.feather_px)
        image = a * person + (1 - a) * (warped * m + render * (1 - m))
        return {"image": image, "mask": (1 - a) * m, "render": render, "m": m, "keep": a}


class TryOnPipeline(nn.Module):
    """The PyTorch reference of the served ensemble: tensors as tryon_pre produces them."""

    def __init__(self, parser: Parser, layout: Layout, warp: Warp, synthesis: Synthesis) -> None:
        super().__init__()
        self.parser, self.layout, self.warp, self.synthesis = parser, layout, warp, synthesis

    def forward(
        self, person: torch.Tensor, garment: torch.Tensor, garment_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parse = self.parser(person)
        layout = self.layout(person, parse, garment, garment_mask)
        warped, warped_mask, _, _ = self.warp(garment, garment_mask, agnostic(person, parse), layout)
        out = self.synthesis(person, parse, layout, warped, warped_mask)
        return {
            "image": out["image"],
            "warped_garment": warped,
            "warped_mask": warped_mask,
            "mask": out["mask"],
            "parse": parse,
            "layout": layout,
        }


class WarpStep(nn.Module):
    """The served warp step: the spec's tensors in (agnostic person built inside), warped pair out."""

    def __init__(self, warp: Warp) -> None:
        super().__init__()
        self.warp = warp

    def forward(
        self,
        garment: torch.Tensor,
        garment_mask: torch.Tensor,
        person: torch.Tensor,
        parse: torch.Tensor,
        layout: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        warped, warped_mask, _, _ = self.warp(garment, garment_mask, agnostic(person, parse), layout)
        return warped, warped_mask


class SynthesisStep(nn.Module):
    def __init__(self, synthesis: Synthesis) -> None:
        super().__init__()
        self.synthesis = synthesis

    def forward(
        self,
        person: torch.Tensor,
        parse: torch.Tensor,
        layout: torch.Tensor,
        warped: torch.Tensor,
        warped_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.synthesis(person, parse, layout, warped, warped_mask)
        return out["image"], out["mask"]


def export_modules(pipe: TryOnPipeline) -> dict[str, nn.Module]:
    """Network step name -> the module exported for that Triton step (inputs in spec order)."""
    return {
        PARSER: pipe.parser.eval(),
        LAYOUT: pipe.layout.eval(),
        WARP: WarpStep(pipe.warp).eval(),
        SYNTHESIS: SynthesisStep(pipe.synthesis).eval(),
    }


# --- checkpoints -----------------------------------------------------------------


def build(widths: dict[str, int], warp_mode: str = "tps+flow", **synthesis: int | bool) -> TryOnPipeline:
    return TryOnPipeline(
        Parser(widths["parser"]),
        Layout(widths["layout"]),
        Warp(widths["warp"], warp_mode),
        Synthesis(widths["synthesis"], **synthesis),  # type: ignore[arg-type]
    )


def pipeline_from_checkpoints(directory: Path) -> TryOnPipeline:
    """Load the four shipped fp16 checkpoints into an fp32 eval-mode pipeline."""
    meta = json.loads((directory / "tryon.json").read_text())
    pipe = build(meta["widths"], meta.get("warp_mode", "tps+flow"), **meta.get("synthesis", {}))
    for name in NETWORKS:
        path = directory / f"tryon_{name}.safetensors"
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        missing, unexpected = getattr(pipe, name).load_state_dict(state, strict=False)
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise ValueError(f"{path}: does not match {name}: {missing=} {unexpected=}")
    return pipe.eval()


def save_network(module: nn.Module, path: Path) -> None:
    """One network as fp16 safetensors (floating-point tensors; the TPS basis is rebuilt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = module.state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items() if v.is_floating_point()}, str(path))


def save_checkpoints(
    pipe: TryOnPipeline, directory: Path, meta: dict, networks: tuple[str, ...] | list[str] = NETWORKS
) -> None:
    """fp16 safetensors per network plus ``tryon.json`` (which must hold ``widths``)."""
    for name in networks:
        save_network(getattr(pipe, name), directory / f"tryon_{name}.safetensors")
    (directory / "tryon.json").write_text(json.dumps(meta, indent=2) + "\n")


TINY_WIDTHS = {"parser": 8, "layout": 8, "warp": 8, "synthesis": 8}


def tiny_pipeline(seed: int = 0) -> TryOnPipeline:
    """A tiny random pipeline (width 8) whose warp moves pixels (non-zero TPS and flow heads)."""
    torch.manual_seed(seed)
    pipe = build(TINY_WIDTHS)
    nn.init.normal_(pipe.warp.tps_head.weight, std=0.05)
    for head in pipe.warp.heads:  # the flow heads start at zero; make the warp do something
        assert isinstance(head, nn.Conv2d)
        nn.init.normal_(head.weight, std=0.05)
    randomize_batchnorm(pipe, seed)
    return pipe.eval()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    return export_modules(pipeline_from_checkpoints(checkpoint_dir))


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    return export_modules(tiny_pipeline(seed))
