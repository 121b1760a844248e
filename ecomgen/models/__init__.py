"""Every ``nn.Module`` ecomgen trains, exports or serves, with its checkpoint I/O.

No training loops here: ``training/`` imports these, ``export/`` imports these, and this
package imports neither. Each model module exposes ``load_networks(checkpoint_dir)`` and
``tiny_networks(seed)`` (random weights, for fast tests), keyed by network step name.
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running stats, so tests really exercise eval-mode BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model
