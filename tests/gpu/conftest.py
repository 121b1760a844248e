"""GPU tests need the TensorRT Python package and a CUDA GPU; without either they skip, saying which."""

from __future__ import annotations

from typing import Any

import pytest

from export.tensorrt import TENSORRT_VERSION
from export.trt_runtime import cuda_device_count


@pytest.fixture(scope="session")
def trt() -> Any:
    return pytest.importorskip(
        "tensorrt",
        reason=f"TensorRT is not installed (pip install tensorrt-cu12=={TENSORRT_VERSION} on a GPU host)",
    )


@pytest.fixture(scope="session")
def cuda_gpu(trt: Any) -> int:
    count = cuda_device_count()
    if count == 0:
        pytest.skip("no CUDA GPU visible through cuda-python (needs 'cuda-python>=12,<13', check the driver)")
    return count
