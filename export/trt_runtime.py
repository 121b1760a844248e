"""TensorRT at run time: the pinned versions, ``import tensorrt`` and a runner for gated engines.

Kept apart from the builder (``export.tensorrt``) and the gate (``export.parity``), so the
gate can run an engine without importing the builder and neither imports the other.
TensorRT and cuda-python are imported lazily: GPU hosts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ecomgen.spec import NetworkSpec

Feeds = Mapping[str, np.ndarray]

# The NVIDIA container the gpu repository's configs were written for: Triton 2.51, the
# same server version as the embedded CPU tritonserver (nvidia-pytriton 0.5.0).
TRITON_CONTAINER = "nvcr.io/nvidia/tritonserver:24.10-py3"
TRITON_VERSION = "2.51.0"
# The TensorRT inside that container (10.5.0.18). A plan deserializes only in the exact
# TensorRT version that built it, so build with this one (pip: tensorrt-cu12==10.5.0).
TENSORRT_VERSION = "10.5.0"
# NVIDIA's TensorRT container of the same release: ships trtexec with the same TensorRT.
TENSORRT_CONTAINER = "nvcr.io/nvidia/tensorrt:24.10-py3"


class TensorRTUnavailable(RuntimeError):
    """The TensorRT Python package is not installed (or not usable) here."""


def import_tensorrt() -> Any:
    """``import tensorrt`` with an actionable error instead of an ImportError traceback."""
    try:
        import tensorrt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer is not loadable
        raise TensorRTUnavailable(
            f"TensorRT is not available ({type(e).__name__}: {e}). Build engines on an NVIDIA GPU host "
            f"with `pip install tensorrt-cu12=={TENSORRT_VERSION} 'cuda-python>=12,<13'`, or print the "
            f"equivalent trtexec line with `python -m export.tensorrt --print-trtexec` and run it in "
            f"{TENSORRT_CONTAINER}."
        ) from None
    return tensorrt


def _cudart() -> Any:
    """cuda-python's runtime API (module path moved in cuda-python 12.6+)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            raise RuntimeError(
                "the TensorRT runner needs cuda-python: pip install 'cuda-python>=12,<13' "
                "(12.x matches the CUDA 12.6 of the 24.10 containers)"
            ) from None
    return runtime


def _cuda_check(result: Any) -> Any:
    """cuda-python returns (err, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else (values or None)


class TensorRTRunner:
    """Runs a serialized TensorRT engine on the GPU (lazy imports: GPU hosts only)."""

    def __init__(self, engine: bytes | Path, net: NetworkSpec, name: str = "tensorrt"):
        trt = import_tensorrt()
        self.trt, self.cudart, self.net, self.name = trt, _cudart(), net, name
        data = engine.read_bytes() if isinstance(engine, Path) else engine
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError(
                "TensorRT could not deserialize the engine (built with another TensorRT version?)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = _cuda_check(self.cudart.cudaStreamCreate())

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        trt, cudart = self.trt, self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        allocations: list[Any] = []
        outputs: dict[str, np.ndarray] = {}
        try:
            for t in self.net.inputs:
                host = np.ascontiguousarray(
                    feeds[t.name], dtype=trt.nptype(self.engine.get_tensor_dtype(t.name))
                )
                self.context.set_input_shape(t.name, host.shape)
                ptr = _cuda_check(cudart.cudaMalloc(host.nbytes))
                allocations.append(ptr)
                _cuda_check(cudart.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, h2d))
                self.context.set_tensor_address(t.name, int(ptr))
            for t in self.net.outputs:
                shape = tuple(self.context.get_tensor_shape(t.name))
                host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(t.name)))
                ptr = _cuda_check(cudart.cudaMalloc(max(host.nbytes, 1)))
                allocations.append(ptr)
                self.context.set_tensor_address(t.name, int(ptr))
                outputs[t.name] = host
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            _cuda_check(cudart.cudaStreamSynchronize(self.stream))
            for t, ptr in zip(self.net.outputs, allocations[len(self.net.inputs) :], strict=True):
                host = outputs[t.name]
                _cuda_check(cudart.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, d2h))
        finally:
            for ptr in allocations:
                cudart.cudaFree(ptr)
        return {k: v.astype(np.float32, copy=False) for k, v in outputs.items()}


def cuda_device_count() -> int:
    """Number of CUDA GPUs visible through cuda-python; 0 when it or a driver is missing."""
    try:
        count = _cuda_check(_cudart().cudaGetDeviceCount())
    except Exception:  # no cuda-python, no driver, no device: all mean "no GPU here"
        return 0
    return int(count)
