"""The networks a Python step runs itself (``PythonStep.calls``), when an ensemble cannot say
which to run: an ad for an uploaded photo needs the cut-out network, one for a generated product
needs the generator and the x4 network, never both.

* :class:`InProcess` (cpu target): each network's ONNX file sits in the step's version directory
  and runs on the CPU runtime chosen for this host, in the step's own process, loaded on first use.
* :class:`ViaBls` (gpu target): each network is its own TensorRT model; a call is a Triton BLS
  request to it, so the GPU batches it with every other caller's.

Both drop the work once the request's deadline has passed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecomgen.errors import DeadlineExceeded
from ecomgen.serving.runners import Runner, calibrated_chunk, make_runner, resolve_runtime


class Networks(Protocol):
    def run(self, name: str, feeds: Mapping[str, np.ndarray], deadline_ns: int = 0) -> dict[str, np.ndarray]:
        """The network's outputs for ``feeds`` (float32 NCHW batches), or DeadlineExceeded."""
        ...


def _check(deadline_ns: int, name: str) -> None:
    if deadline_ns > 0 and time.monotonic_ns() > deadline_ns:
        raise DeadlineExceeded(f"deadline exceeded before {name} ran; the request was dropped")


def _floats(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}


class InProcess:
    """The called networks on this process's CPU runtime (cpu target)."""

    def __init__(self, model_dir: Path, calls: Mapping[str, Mapping[str, Any]], params: Mapping[str, str]):
        self.model_dir = Path(model_dir)
        self.calls = dict(calls)
        self.runtime = params.get("runtime", "auto")
        self.threads = int(params.get("threads", "1"))
        self._runners: dict[str, Runner] = {}

    def runner(self, name: str) -> Runner:
        if name not in self.calls:
            raise KeyError(f"{name} is not among the networks this step calls: {sorted(self.calls)}")
        if name not in self._runners:
            path = self.model_dir / f"{name}.onnx"
            runtime = resolve_runtime(self.runtime, path)
            max_batch = int(self.calls[name]["max_batch"])
            self._runners[name] = make_runner(path, runtime, self.threads, max_batch, calibrated_chunk(path))
        return self._runners[name]

    def run(self, name: str, feeds: Mapping[str, np.ndarray], deadline_ns: int = 0) -> dict[str, np.ndarray]:
        _check(deadline_ns, name)
        return self.runner(name).run(_floats(feeds))


class ViaBls:
    """The called networks as Triton models, through the Python backend's BLS API (gpu target)."""

    def __init__(self, pb_utils: Any, calls: Mapping[str, Mapping[str, Any]]):
        self.pb = pb_utils
        self.calls = dict(calls)

    def run(self, name: str, feeds: Mapping[str, np.ndarray], deadline_ns: int = 0) -> dict[str, np.ndarray]:
        _check(deadline_ns, name)
        pb = self.pb
        kwargs: dict[str, Any] = {}
        memory = getattr(pb, "PreferredMemory", None)
        if memory is not None:  # outputs in host memory: the step's code is numpy
            kwargs["preferred_memory"] = memory(pb.TRITONSERVER_MEMORY_CPU, 0)
        if deadline_ns > 0:
            kwargs["timeout"] = max(1, (deadline_ns - time.monotonic_ns()) // 1000)
        request = pb.InferenceRequest(
            model_name=name,
            inputs=[pb.Tensor(k, v) for k, v in _floats(feeds).items()],
            requested_output_names=list(self.calls[name]["outputs"]),
            **kwargs,
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{name}: {response.error().message()}")
        return {t.name(): t.as_numpy() for t in response.output_tensors()}
