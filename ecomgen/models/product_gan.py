"""product_gan's networks: a class-conditional generator and its projection discriminator.

Generator: DCGAN-style transposed convolutions with conditional BatchNorm (the class
picks each layer's scale and shift), exported with BatchNorm in eval mode so a request
never depends on its batch neighbours. Discriminator: spectral-norm convolutions with a
projection head (Miyato & Koyama 2018). The class enters both as a one-hot vector times
a matrix, which exports to ONNX/TensorRT as a MatMul rather than a batched Gather.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import spectral_norm

from ecomgen.models import randomize_batchnorm
from ecomgen.numerics import latents_from_seeds, one_hot
from ecomgen_client.contracts import PRODUCT_CLASSES, PRODUCT_IMAGE_HW

# The network's step name and latent size: the served spec (ecomgen.specs.product_gan) reads them.
GENERATOR = "product_gan_generator"
LATENT_DIM = 128
CHECKPOINT_NAME = "product_gan.safetensors"
NUM_CLASSES = len(PRODUCT_CLASSES)
NZ = LATENT_DIM
H, W = PRODUCT_IMAGE_HW


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine terms, then a per-class scale and shift."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(num_classes, channels, bias=False)
        self.beta = nn.Linear(num_classes, channels, bias=False)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        g = self.gamma(y_onehot)[:, :, None, None]
        b = self.beta(y_onehot)[:, :, None, None]
        return self.bn(x) * g + b


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.norm = ConditionalBatchNorm2d(cin, num_classes)
        self.conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.norm(x, y)))


class Generator(nn.Module):
    """(z [B, nz], class_onehot [B, C]) -> image [B, 3, 64, 48] in [-1, 1]."""

    def __init__(self, nz: int = NZ, ngf: int = 64, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.nz, self.ngf, self.num_classes = nz, ngf, num_classes
        self.bottom = (H // 16, W // 16)
        self.fc = nn.Linear(nz, 8 * ngf * self.bottom[0] * self.bottom[1])
        chans = [8 * ngf, 4 * ngf, 2 * ngf, ngf, ngf // 2]
        self.blocks = nn.ModuleList(UpBlock(a, b, num_classes) for a, b in itertools.pairwise(chans))
        self.final_norm = nn.BatchNorm2d(chans[-1])
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, class_onehot: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], 8 * self.ngf, *self.bottom)
        for block in self.blocks:
            x = block(x, class_onehot)
        return torch.tanh(self.to_rgb(F.relu(self.final_norm(x))))


class Discriminator(nn.Module):
    """Spectral-norm CNN with a class-projection head: returns one logit per image."""

    def __init__(self, ndf: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()

        def sn_conv(a: int, b: int, k: int, s: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(a, b, k, s, (k - 1) // 2 if s == 1 else 1))

        self.convs = nn.ModuleList(
            [
                sn_conv(3, ndf, 3, 1),  # 64x48
                sn_conv(ndf, 2 * ndf, 4, 2),  # 32x24
                sn_conv(2 * ndf, 4 * ndf, 4, 2),  # 16x12
                sn_conv(4 * ndf, 8 * ndf, 4, 2),  # 8x6
                sn_conv(8 * ndf, 8 * ndf, 3, 1),
            ]
        )
        self.linear = spectral_norm(nn.Linear(8 * ndf, 1))
        self.embed = spectral_norm(nn.Linear(num_classes, 8 * ndf, bias=False))

    def forward(self, x: torch.Tensor, class_onehot: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
        h = x.sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(class_onehot) * h).sum(1)


# --- checkpoints and the reference path ------------------------------------------


def generator_from_checkpoint(path: str | Path) -> Generator:
    """Load the shipped fp16 safetensors checkpoint into an fp32 eval-mode generator."""
    state = load_file(str(path))
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    g = Generator(nz=meta["nz"], ngf=meta["ngf"], num_classes=meta["num_classes"])
    missing, unexpected = g.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"{path}: checkpoint does not match Generator: {missing=} {unexpected=}")
    return g.eval()


@torch.no_grad()
def generate(g: Generator, class_ids: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Reference PyTorch path: (class_id, seed) -> NCHW float in [-1, 1]."""
    z = torch.from_numpy(latents_from_seeds(seeds, g.nz))
    y = torch.from_numpy(one_hot(class_ids, g.num_classes))
    return g(z, y).numpy()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    """The shipped generator, keyed by its network step name."""
    return {GENERATOR: generator_from_checkpoint(Path(checkpoint_dir) / CHECKPOINT_NAME)}


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    """A tiny random generator (ngf=8) with non-trivial BatchNorm stats, for fast tests."""
    torch.manual_seed(seed)
    return {GENERATOR: randomize_batchnorm(Generator(ngf=8), seed).eval()}
