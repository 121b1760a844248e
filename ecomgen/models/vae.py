"""personalize: a convolutional VAE for 64x48 product photos (encoder and decoder steps).

The encoder maps a photo to a diagonal Gaussian posterior ``(mu, logvar)`` over an
``L``-dimensional latent; the decoder maps a latent back to a photo. The server encodes a
shopper's history, combines the posteriors (``ecomgen.serving.aggregate``), samples around
the result and decodes the samples.

Export contract (the Triton steps depend on it exactly):

* ``personalize_encoder``: ``image`` float32 [N, 3, 64, 48] in [-1, 1] -> ``mu`` [N, L],
  ``logvar`` [N, L] (forward returns the tuple in that order). ``logvar`` is clamped to
  [-10, 10] inside the network, so ``exp`` cannot overflow in an fp16 engine.
* ``personalize_decoder``: ``z`` float32 [N, L] -> ``image`` [N, 3, 64, 48] in [-1, 1] (clipped;
  see ``Decoder.forward`` for why not tanh).

Both are plain convolutions, nearest-neighbour upsampling, SiLU, a linear layer, a clip
and reshapes: no normalisation layers at all, so a row never depends on its batch neighbours,
and nothing in them troubles ONNX opset 17, OpenVINO or TensorRT.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINT_NAME = "personalize_vae"
IMAGE_HW = (64, 48)
LATENT_DIM = 64
WIDTH = 32
LOGVAR_RANGE = (-10.0, 10.0)
# The smallest feature map: 64x48 halved four times.
BOTTOM_HW = (IMAGE_HW[0] // 16, IMAGE_HW[1] // 16)
NETWORK_NAMES = ("personalize_encoder", "personalize_decoder")
ENCODER, DECODER = NETWORK_NAMES
# The nearest-neighbour index the training writes beside the checkpoint (served as an artifact).
CATALOGUE_FILE = "personalize_catalogue.safetensors"


def init_weights(module: nn.Module) -> nn.Module:
    """He-normal convs and linears, zero biases.

    There is no normalisation layer to rescue the signal, and PyTorch's default init shrinks it
    by ~sqrt(3) per layer: through 13 layers the first gradients are ~1e-7, Adam turns them into
    full-size steps and the network saturates before it learns anything.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class Encoder(nn.Module):
    """image [N, 3, 64, 48] in [-1, 1] -> (mu [N, L], logvar [N, L]).

    Four stride-2 4x4 convs narrow 64x48 to 4x3 (a 3x3 conv after each of the middle two);
    one linear layer reads both posterior parameters off the flattened map.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = WIDTH) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        ch = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(itertools.pairwise(ch)):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.SiLU()]
            if i in (1, 2):
                layers += [nn.Conv2d(cout, cout, 3, 1, 1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch[-1] * BOTTOM_HW[0] * BOTTOM_HW[1], 2 * latent_dim)
        init_weights(self)
        # Start near the prior: small means, unit variances.
        nn.init.normal_(self.head.weight, std=0.01 / (ch[-1] * BOTTOM_HW[0] * BOTTOM_HW[1]) ** 0.5)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(image).flatten(1))
        mu, logvar = out[:, : self.latent_dim], out[:, self.latent_dim :]
        return mu, torch.clamp(logvar, *LOGVAR_RANGE)


class Decoder(nn.Module):
    """z [N, L] -> image [N, 3, 64, 48] in [-1, 1].

    A linear layer to a 4x3 map, then four stages of nearest x2 upsampling and 3x3 convs
    (upsample + conv rather than transposed convs: no checkerboard artefacts). The full
    resolution stage is narrow (width / 2, one conv) because it dominates the cost.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = WIDTH) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        ch = [8 * width, 4 * width, 2 * width, width, width // 2]
        self.bottom = ch[0]
        self.fc = nn.Linear(latent_dim, ch[0] * BOTTOM_HW[0] * BOTTOM_HW[1])
        stages = []
        for i, (cin, cout) in enumerate(itertools.pairwise(ch)):
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 1, 1), nn.SiLU()]
            if i < len(ch) - 2:
                layers += [nn.Conv2d(cout, cout, 3, 1, 1), nn.SiLU()]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(ch[-1], 3, 3, 1, 1)
        init_weights(self)
        nn.init.normal_(self.out.weight, std=0.01)  # start from a flat grey image

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        """The unclipped output, which the training losses see."""
        h = F.silu(self.fc(z)).reshape(-1, self.bottom, *BOTTOM_HW)
        for stage in self.stages:
            h = stage(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # A clip, not tanh: over half the pixels of a catalogue photo are pure white (exactly 1.0),
        # which tanh only reaches at infinity; regression losses then push the whole network into
        # saturation (measured: every gradient zero within 20 Adam steps). Trained on the raw output,
        # clipped here, so the served range is still [-1, 1].
        return torch.clamp(self.raw(z), -1.0, 1.0)


class VAE(nn.Module):
    """Both networks, for training: ``forward`` returns (reconstruction, mu, logvar, z)."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = WIDTH) -> None:
        super().__init__()
        self.encoder = Encoder(latent_dim, width)
        self.decoder = Decoder(latent_dim, width)

    def forward(
        self, image: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(image)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decoder(z), mu, logvar, z


def networks(vae: VAE) -> dict[str, nn.Module]:
    """Network step name -> module, in eval mode (what export and serving use)."""
    return {"personalize_encoder": vae.encoder.eval(), "personalize_decoder": vae.decoder.eval()}


def save_vae(vae: VAE, path: Path) -> None:
    """Both networks in one fp16 safetensors file, keys prefixed ``encoder.`` / ``decoder.``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in vae.state_dict().items()}
    save_file(
        state,
        str(path),
        metadata={"latent_dim": str(vae.encoder.latent_dim), "width": str(vae.encoder.width)},
    )


def load_vae(path: Path, latent_dim: int | None = None, width: int | None = None) -> VAE:
    """An fp32 eval-mode VAE from the fp16 safetensors file (sizes from its metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    latent_dim = latent_dim or int(meta.get("latent_dim", LATENT_DIM))
    width = width or int(meta.get("width", WIDTH))
    vae = VAE(latent_dim, width)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    vae.load_state_dict(state, strict=True)
    return vae.eval()


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    """The trained encoder and decoder, keyed by network step name, fp32, eval mode."""
    checkpoint_dir = Path(checkpoint_dir)
    record = checkpoint_dir / f"{CHECKPOINT_NAME}.json"
    sizes = json.loads(record.read_text()) if record.exists() else {}
    vae = load_vae(
        checkpoint_dir / f"{CHECKPOINT_NAME}.safetensors", sizes.get("latent_dim"), sizes.get("width")
    )
    return networks(vae)


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    """The same structure with tiny random weights (width 4), for fast tests. The latent size stays
    LATENT_DIM: the served steps' tensors (``ecomgen.specs.personalize``) are declared with it."""
    torch.manual_seed(seed)
    return networks(VAE(latent_dim=LATENT_DIM, width=4))
