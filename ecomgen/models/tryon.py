"""tryon's networks: person parser, appearance-flow warp and synthesis U-Net (256x192).

* **parser** (U-Net): person photo -> 5 region probabilities (background, head, upper
  clothes, arms, lower body).
* **warp** (appearance flow, PF-AFN / DM-VTON style without correlation layers): garment,
  its mask and the person representation -> a dense flow, refined coarse to fine;
  ``grid_sample`` (bilinear, zeros padding, align_corners=False) warps the garment and its
  mask onto the person.
* **synthesis** (U-Net): renders the image and a composition mask m;
  ``warped*m + render*(1-m)``, then the regions to keep (head, lower body, background) are
  pasted back from the person photo.

Each is its own ONNX model and Triton step; ``export_modules`` adapts them to the step
tensors the served steps declare. BatchNorm is exported in eval mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ecomgen.models import randomize_batchnorm

# The networks' step names: the served spec (ecomgen.specs.tryon) reads them.
PARSER, WARP, SYNTHESIS = "tryon_parser", "tryon_warp", "tryon_synthesis"
REGIONS = ("background", "head", "upper", "arms", "lower")
BACKGROUND, HEAD, UPPER, ARMS, LOWER = range(len(REGIONS))
NUM_REGIONS = len(REGIONS)
NETWORKS = ("parser", "warp", "synthesis")
# The warp's grid_sample settings; export and the parity test check the same ones.
GS_MODE, GS_PADDING, GS_ALIGN_CORNERS = "bilinear", "zeros", False
GRID_SAMPLE = {"mode": GS_MODE, "padding_mode": GS_PADDING, "align_corners": GS_ALIGN_CORNERS}
# Coarse body shape: the replaced region pooled over this many pixels.
SHAPE_POOL = 16
# The replaced region is grown by this many pixels before the person photo is masked.
GROW = 2


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
    """Network step name -> the module exported for that Triton step (inputs in spec order)."""
    return {
        PARSER: pipe.parser.eval(),
        WARP: WarpStep(pipe.warp).eval(),
        SYNTHESIS: SynthesisStep(pipe.synthesis).eval(),
    }


# --- checkpoints -----------------------------------------------------------------


def build(widths: dict[str, int]) -> TryOnPipeline:
    return TryOnPipeline(Parser(widths["parser"]), Warp(widths["warp"]), Synthesis(widths["synthesis"]))


def pipeline_from_checkpoints(directory: Path) -> TryOnPipeline:
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


def tiny_pipeline(seed: int = 0) -> TryOnPipeline:
    """A tiny random pipeline (width 8) whose warp moves pixels (non-zero flow heads)."""
    torch.manual_seed(seed)
    pipe = build({"parser": 8, "warp": 8, "synthesis": 8})
    for head in pipe.warp.heads:  # the flow heads start at zero; make the warp do something
        assert isinstance(head, nn.Conv2d)
        nn.init.normal_(head.weight, std=0.05)
    randomize_batchnorm(pipe, seed)
    return pipe.eval()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    return export_modules(pipeline_from_checkpoints(checkpoint_dir))


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    return export_modules(tiny_pipeline(seed))
