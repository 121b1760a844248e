"""The previous try-on model (v1, commit d048d19), kept so the evaluation can compare against it.

Parser -> appearance-flow warp -> synthesis with a hard keep mask (head, lower body and
background kept; upper clothes *and arms* replaced). Its checkpoints are not in the working
tree any more; place them with::

    mkdir -p build/tryon_v1 && for f in tryon.json tryon_parser.safetensors tryon_warp.safetensors \
        tryon_synthesis.safetensors; do git show d048d19:checkpoints/$f > build/tryon_v1/$f; done

and evaluate with ``python -m training.tryon_eval --v1-dir build/tryon_v1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ecomgen.models.tryon import (
    ARMS,
    BACKGROUND,
    GS_ALIGN_CORNERS,
    GS_MODE,
    GS_PADDING,
    HEAD,
    LOWER,
    UPPER,
    Parser,
    UNet,
    identity_grid,
)

SHAPE_POOL = 16
GROW = 2
V1_DIR = Path(__file__).resolve().parents[1] / "build" / "tryon_v1"


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


def pipeline_from_checkpoints(directory: Path = V1_DIR) -> TryOnPipeline:
    """The three v1 fp16 checkpoints as an fp32 eval-mode pipeline."""
    meta = json.loads((directory / "tryon.json").read_text())
    w = meta["widths"]
    pipe = TryOnPipeline(Parser(w["parser"]), Warp(w["warp"]), Synthesis(w["synthesis"]))
    for name in ("parser", "warp", "synthesis"):
        state = {k: v.float() for k, v in load_file(str(directory / f"tryon_{name}.safetensors")).items()}
        missing, unexpected = getattr(pipe, name).load_state_dict(state, strict=False)
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise ValueError(f"{directory}: does not match v1 {name}: {missing=} {unexpected=}")
    return pipe.eval()
