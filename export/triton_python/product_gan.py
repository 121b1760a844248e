"""product_gan on the cpu target: product_gan_pre, the ONNX generator and uint8 output in one model.

The generator runs on the spec's CPU runtime (OpenVINO or ONNX Runtime).

Fusing the three steps means a batch crosses the Python stub's shared memory
once instead of three times.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import to_uint8_hwc
from ecomgen_triton import cpu_runner
from product_gan_pre import TritonPythonModel as PreprocessModel


class TritonPythonModel(PreprocessModel):
    def setup(self) -> None:
        super().setup()
        self.runner = cpu_runner(
            os.path.join(self.model_dir, self.params["onnx_file"]),
            self.params,
            max_batch=int(self.model_config["max_batch_size"]),
        )

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = self.runner.run(super().compute(batch))["image"]
        return {"image": to_uint8_hwc(images)}
