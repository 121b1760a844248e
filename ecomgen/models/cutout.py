"""cutout: a small salient-object matting network for product photos (the ``product_cutout`` step).

Contract of the served step ``product_cutout_net`` (one input, one output, float32 NCHW):

* ``image`` [N, 3, H, W] with (H, W) = ``INPUT_HW``: RGB (not BGR) in [-1, 1]
  (``uint8 / 127.5 - 1``), the whole photo resized to the fixed size *without* keeping its
  aspect ratio (OpenCV ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging);
* ``alpha`` [N, 1, H, W]: the soft matte in [0, 1] (the sigmoid is inside the network).

The served post step upsamples ``alpha`` to the photo's own size with a guided filter
(``ecomgen.creative.matte.refine_alpha``).

:class:`CutoutNet` is a U-Net of plain 3x3 convolutions + BatchNorm + ReLU: five stride-2
encoder stages (16, 32, 64, 96, 128 channels; dilated convs at 1/16 and 1/32 widen the
receptive field to the whole image, which is what "salient" needs), a decoder that adds
bilinearly upsampled features to 1x1-projected skips, and a light full-resolution head that
sees the input image again for sharper edges. In training mode it also returns deep-supervision
side outputs (logits at 1/8, 1/4, 1/2), as U^2-Net and ISNet do; in eval mode only ``alpha``.
Its ONNX graph holds Conv (BatchNorm folded), Relu, Add, Concat, Resize (bilinear, constant
scales) and Sigmoid, which ONNX Runtime, OpenVINO and TensorRT all run natively. BatchNorm is
in eval mode at export, so a request never depends on its batch neighbours.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

NETWORK = "product_cutout_net"
INPUT_HW = (256, 256)
INPUT, OUTPUT = "image", "alpha"
CHECKPOINT_NAME = "product_cutout"
ONNX_OPSET = 17
# The trained and shipped configuration, and the tiny one for tests.
DEFAULT_CONFIG: dict[str, object] = {"widths": [16, 32, 64, 96, 128], "head": 8}
TINY_CONFIG: dict[str, object] = {"widths": [4, 4, 8, 8, 8], "head": 4}


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def up2(x: torch.Tensor) -> torch.Tensor:
    # Constant scale factor: exports as Resize with constant scales (no shape arithmetic).
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class CutoutNet(nn.Module):
    """image [N,3,H,W] in [-1,1] -> alpha [N,1,H,W] in [0,1]; H and W divisible by 32."""

    def __init__(self, widths: list[int] | tuple[int, ...] = (16, 32, 64, 96, 128), head: int = 8) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.widths, self.head_width = list(widths), head
        self.enc0 = nn.Sequential(conv_bn_relu(3, w0, 2), conv_bn_relu(w0, w0))  # 1/2
        self.enc1 = nn.Sequential(conv_bn_relu(w0, w1, 2), conv_bn_relu(w1, w1))  # 1/4
        self.enc2 = nn.Sequential(conv_bn_relu(w1, w2, 2), conv_bn_relu(w2, w2), conv_bn_relu(w2, w2))  # 1/8
        self.enc3 = nn.Sequential(conv_bn_relu(w2, w3, 2), conv_bn_relu(w3, w3), conv_bn_relu(w3, w3, 1, 2))
        self.enc4 = nn.Sequential(
            conv_bn_relu(w3, w4, 2), conv_bn_relu(w4, w4, 1, 2), conv_bn_relu(w4, w4, 1, 4)
        )  # 1/32: with dilation 4 one 3x3 conv spans the whole 8x8 map at 256 px
        # Decoder: skip projected to the decoder width and added, then one 3x3 conv per scale.
        self.lat3, self.dec3 = nn.Conv2d(w3, w4, 1), conv_bn_relu(w4, w3)
        self.lat2, self.dec2 = nn.Conv2d(w2, w3, 1), conv_bn_relu(w3, w2)
        self.lat1, self.dec1 = nn.Conv2d(w1, w2, 1), conv_bn_relu(w2, w1)
        self.lat0, self.dec0 = nn.Conv2d(w0, w1, 1), conv_bn_relu(w1, w0)
        # Full-resolution head: decoder features + the image itself, for edges.
        self.head = nn.Sequential(conv_bn_relu(w0 + 3, head), nn.Conv2d(head, 1, 3, 1, 1))
        # Deep supervision (training only): logits at 1/8, 1/4 and 1/2.
        self.side2, self.side1, self.side0 = nn.Conv2d(w2, 1, 1), nn.Conv2d(w1, 1, 1), nn.Conv2d(w0, 1, 1)

    def forward_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        e0 = self.enc0(image)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(up2(e4) + self.lat3(e3))
        d2 = self.dec2(up2(d3) + self.lat2(e2))
        d1 = self.dec1(up2(d2) + self.lat1(e1))
        d0 = self.dec0(up2(d1) + self.lat0(e0))
        logits = self.head(torch.cat([up2(d0), image], dim=1))
        return logits, [self.side2(d2), self.side1(d1), self.side0(d0)]

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        logits, sides = self.forward_logits(image)
        if self.training:
            return logits, sides  # raw logits: the loss uses BCE-with-logits (stable)
        return torch.sigmoid(logits)


def build(config: dict[str, object] | None = None) -> CutoutNet:
    cfg = dict(DEFAULT_CONFIG if config is None else config)
    return CutoutNet(widths=list(cfg["widths"]), head=int(cfg["head"]))  # type: ignore[call-overload]


# --- checkpoints -----------------------------------------------------------------


def save_checkpoint(model: CutoutNet, directory: Path, meta: dict, stem: str = CHECKPOINT_NAME) -> Path:
    """fp16 ``<stem>.safetensors`` plus ``<stem>.json`` (``meta`` with the config added)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.safetensors"
    state = {
        k: v.detach().half().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()
    }
    save_file(state, str(path))
    path.chmod(0o644)  # safetensors writes 0600; serving may read it as another user
    meta = {**meta, "config": {"widths": model.widths, "head": model.head_width}, "input_hw": list(INPUT_HW)}
    (directory / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_checkpoint(directory: Path, stem: str = CHECKPOINT_NAME) -> CutoutNet:
    """The fp16 checkpoint as an fp32, eval-mode :class:`CutoutNet` of the recorded config."""
    directory = Path(directory)
    meta = json.loads((directory / f"{stem}.json").read_text())
    model = build(meta["config"])
    state = {k: v.float() for k, v in load_file(str(directory / f"{stem}.safetensors")).items()}
    # BatchNorm's integer batch counters are not saved (not needed in eval mode).
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise KeyError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    """The trained cut-out network keyed by its step name, fp32, eval mode, ready for export."""
    return {NETWORK: load_checkpoint(Path(checkpoint_dir))}


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    """The same structure and I/O with tiny random weights, for fast tests.

    BatchNorm statistics are randomised too, so eval mode is not an identity.
    """
    torch.manual_seed(seed)
    model = build(TINY_CONFIG)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    return {NETWORK: model.eval()}


# --- conventions and measurement -------------------------------------------------


def to_unit_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [-1, 1] (the served pre step does the same)."""
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_image(model: nn.Module, hw: tuple[int, int] = INPUT_HW) -> int:
    """FLOPs (2 x multiply-accumulates, convolutions only) of one eval forward pass at ``hw``."""
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, *hw))
    return int(counter.get_total_flops())
