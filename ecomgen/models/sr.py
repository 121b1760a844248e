"""sr: a compact x4 super-resolution network (detail close-ups), and an ESPCN baseline.

Contract of the served step ``sr_network`` (one input, one output, float32 NCHW):

* ``lowres``  [N, 3, H, W], RGB in [-1, 1] (``uint8 / 127.5 - 1``); N, H, W dynamic;
* ``highres`` [N, 3, 4H, 4W], RGB in [-1, 1], *not* clipped: the served post step clips and
  converts with ``ecomgen.numerics.to_uint8_hwc`` (see :func:`to_uint8`).

:class:`SRNet` is an EDSR/RLFN-style plain network sized like the NTIRE efficient-SR entries:
a 3x3 head conv, residual blocks of two 3x3 convs with LeakyReLU, a long feature skip, one 3x3
conv to 3*16 channels and PixelShuffle(4), plus a global residual: the bilinearly upsampled
input. Its ONNX graph holds only Conv, LeakyRelu, Add, DepthToSpace and one Resize (bilinear,
half-pixel, constant scales), all of which ONNX Runtime, OpenVINO and TensorRT run natively.
No normalisation layers, so a request never depends on its batch neighbours.

:class:`ESPCN` is the classic baseline (Shi et al., CVPR 2016): 5x5 conv 64, 3x3 conv 32,
3x3 conv to 3*16, tanh activations, PixelShuffle; no residual. Evaluation only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecomgen.numerics import to_uint8_hwc

SCALE = 4
STEP = "sr_network"
INPUT, OUTPUT = "lowres", "highres"
# Checkpoint stems in the checkpoint directory: <stem>.safetensors + <stem>.json.
SR_STEM, ESPCN_STEM = "sr", "sr_espcn"
# The full-size configuration (the one trained and shipped).
DEFAULT_CONFIG = {"channels": 48, "blocks": 6}
TINY_CONFIG = {"channels": 8, "blocks": 1}


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResBlock(nn.Module):
    """x + conv(act(conv(x))): plain convs and one Add, which TensorRT fuses into the conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class SRNet(nn.Module):
    """lowres [N,3,H,W] in [-1,1] -> highres [N,3,4H,4W]; see the module docstring."""

    def __init__(self, channels: int = 48, blocks: int = 6, scale: int = SCALE) -> None:
        super().__init__()
        self.scale = scale
        self.head = conv3x3(3, channels)
        self.body = nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))
        self.body_tail = conv3x3(channels, channels)
        self.up = conv3x3(channels, 3 * scale * scale)
        self.shuffle = nn.PixelShuffle(scale)
        # Small residual branches at init: each block starts near identity and the network
        # near plain bilinear upsampling, so a short CPU schedule starts from a sane output.
        with torch.no_grad():
            for block in self.body:
                assert isinstance(block, ResBlock)
                block.conv2.weight.mul_(0.1)
                block.conv2.bias.zero_()  # type: ignore[union-attr]
            self.up.weight.mul_(0.1)
            self.up.bias.zero_()  # type: ignore[union-attr]

    def upsampled_input(self, lowres: torch.Tensor) -> torch.Tensor:
        # Constant scale factors (not a target size) export as Resize with constant scales,
        # which keeps H and W dynamic in ONNX and TensorRT.
        return F.interpolate(lowres, scale_factor=float(self.scale), mode="bilinear", align_corners=False)

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        feat = self.head(lowres)
        feat = feat + self.body_tail(self.body(feat))
        return self.shuffle(self.up(feat)) + self.upsampled_input(lowres)


class ESPCN(nn.Module):
    """Classic ESPCN x4 on RGB: conv5x5(64)-tanh-conv3x3(32)-tanh-conv3x3(3*16)-PixelShuffle."""

    def __init__(self, scale: int = SCALE, c1: int = 64, c2: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(
            nn.Conv2d(3, c1, 5, 1, 2),
            nn.Tanh(),
            nn.Conv2d(c1, c2, 3, 1, 1),
            nn.Tanh(),
            nn.Conv2d(c2, 3 * scale * scale, 3, 1, 1),
            nn.PixelShuffle(scale),
        )

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        return self.net(lowres)


ARCHS: dict[str, type[nn.Module]] = {"sr": SRNet, "espcn": ESPCN}
STEMS = {"sr": SR_STEM, "espcn": ESPCN_STEM}


def build(arch: str, config: dict[str, int] | None = None) -> nn.Module:
    if arch == "sr":
        return SRNet(**(config or DEFAULT_CONFIG))
    if arch == "espcn":
        return ESPCN(**(config or {}))
    raise KeyError(f"unknown SR architecture {arch!r} (expected one of {sorted(ARCHS)})")


# --- checkpoints -----------------------------------------------------------------


def save_checkpoint(model: nn.Module, directory: Path, stem: str, meta: dict) -> Path:
    """fp16 safetensors ``<stem>.safetensors`` plus ``<stem>.json`` (must hold ``arch``, ``config``)."""
    if "arch" not in meta or "config" not in meta:
        raise ValueError("checkpoint metadata needs 'arch' and 'config'")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.safetensors"
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(path))
    path.chmod(0o644)  # safetensors writes 0600; serving may read it as another user
    (directory / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_checkpoint(directory: Path, stem: str) -> nn.Module:
    """The fp16 checkpoint ``<stem>`` as an fp32, eval-mode module of the recorded architecture."""
    meta = json.loads((directory / f"{stem}.json").read_text())
    model = build(meta["arch"], meta["config"])
    state = {k: v.float() for k, v in load_file(str(directory / f"{stem}.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    """The trained SR network, keyed by its step name, eval mode, ready for ONNX export."""
    return {STEP: load_checkpoint(Path(checkpoint_dir), SR_STEM)}


def load_espcn(checkpoint_dir: Path) -> nn.Module:
    """The trained ESPCN baseline (evaluation only; not served)."""
    return load_checkpoint(Path(checkpoint_dir), ESPCN_STEM)


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    """The same structure with tiny random weights (8 channels, 1 block), for fast tests.

    The residual branches are re-drawn at full scale so the body visibly changes the output.
    """
    torch.manual_seed(seed)
    model = SRNet(**TINY_CONFIG)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.2)
            nn.init.normal_(m.bias, std=0.05)  # type: ignore[arg-type]
    return {STEP: model.eval()}


# --- conventions and measurement -------------------------------------------------


def to_unit_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1] (the served pre step does the same)."""
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float NCHW (any range) -> uint8 NHWC as the server returns it: ``ecomgen.numerics.to_uint8_hwc``
    (clip to [-1, 1], NaN to 0), for torch tensors."""
    return torch.from_numpy(to_uint8_hwc(x.detach().float().cpu().numpy()))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_image(model: nn.Module, height: int = 64, width: int = 48) -> int:
    """FLOPs of one forward pass at ``height`` x ``width`` input, from ``FlopCounterMode``.

    Convention: FLOPs = 2 x multiply-accumulates (FlopCounterMode counts a convolution so);
    only convolutions are counted, not activations, adds, PixelShuffle or the Resize.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, height, width))
    return int(counter.get_total_flops())
