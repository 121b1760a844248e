"""One try-on network step on the cpu target: its ONNX file on the spec's CPU runtime.

The same ``model.onnx`` becomes a TensorRT plan on the gpu target; the tensor names
and dims come from the config that export/repository.py wrote from the NetworkSpec.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import RequestError
from ecomgen_triton import BatchedPythonModel, cpu_runner


class TritonPythonModel(BatchedPythonModel):
    def setup(self) -> None:
        self.runner = cpu_runner(
            os.path.join(self.model_dir, self.params["onnx_file"]),
            self.params,
            max_batch=int(self.model_config["max_batch_size"]),
        )

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise RequestError(f"input '{name}' contains NaN or Inf")

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in batch.items()})
