"""Generic conversions between client images (uint8 HWC) and network tensors (float NCHW)."""

from __future__ import annotations

import numpy as np

from ecomgen.numerics import from_uint8_hwc, mask_to_uint8, to_uint8_hwc
from ecomgen.serving.step import Step


class ToUint8(Step):
    """Every declared output from the input of the same name (or ``source.<output>``).

    An [H, W, 3] output takes a [3, H, W] image in [-1, 1]; an [H, W] output takes a
    [1, H, W] mask in [0, 1].
    """

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, info in self.config.outputs.items():
            source = batch[self.params.get(f"source.{name}", name)]
            out[name] = to_uint8_hwc(source) if len(info.dims) == 3 else mask_to_uint8(source)
        return out


class FromUint8(Step):
    """Every declared output ([3, H, W] in [-1, 1]) from a uint8 [H, W, 3] input (``source.<output>``)."""

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            name: from_uint8_hwc(batch[self.params.get(f"source.{name}", name)])
            for name in self.config.outputs
        }
