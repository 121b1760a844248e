"""Image-quality metrics for training and evaluation (torch), one home each.

SSIM comes from ``pytorch_msssim`` (Gaussian 11x11 window, sigma 1.5, K = 0.01/0.03).
That library filters without padding; ``padding=5`` zero-pads both images first, which
is exactly pytorch-ssim's same-size convention that the VITON try-on papers report
(conv with zero padding == zero-pad, then a valid conv). PSNR has one home,
``ecomgen.numerics.psnr`` (numpy; ``axis=(1, 2, 3)`` gives per-image values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ssim


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, padding: int = 0) -> torch.Tensor:
    """Mean SSIM per image (NCHW). ``padding=5`` with ``data_range=1`` on [0, 1] images is
    pytorch-ssim's convention (ACGPN's README: window 11, images / 255)."""
    if padding:
        a, b = F.pad(a, (padding,) * 4), F.pad(b, (padding,) * 4)
    return _ssim(a, b, data_range=data_range, size_average=False, win_size=11, win_sigma=1.5)
