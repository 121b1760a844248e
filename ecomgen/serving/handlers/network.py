"""A network step on the cpu target: ``<network>.onnx`` in the version directory on a CPU runtime.

The same ONNX file becomes a TensorRT plan on the gpu target; tensor names and dims come
from the config that ``export.repository`` wrote from the network's spec.
"""

from __future__ import annotations

import numpy as np

from ecomgen.serving.runners import Runner, calibrated_chunk, make_runner, resolve_runtime
from ecomgen.serving.step import Step


def network_runner(step: Step, network: str) -> Runner:
    path = step.config.model_dir / f"{network}.onnx"
    runtime = resolve_runtime(step.params.get("runtime", "auto"), path)
    threads = int(step.params.get("threads", "1"))
    return make_runner(path, runtime, threads, max(1, step.config.max_batch_size), calibrated_chunk(path))


class NetworkRunner(Step):
    def setup(self) -> None:
        self.runner = network_runner(self, self.params["network"])

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in batch.items()})
