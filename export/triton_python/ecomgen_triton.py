"""Base class for ecomgen's Triton Python-backend models.

Triton hands ``execute`` every request the dynamic batcher grouped. Each request
is validated on its own: a bad one gets an INVALID_ARG response naming the
problem, and the rest are concatenated into one batch, computed once and split
back. Copied next to each ``model.py`` by ``export/repository.py``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from ecomgen_common import RequestError, check_batched

_CONFIG_DTYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_STRING": np.object_,
}


class BatchedPythonModel:
    """Subclasses implement ``validate`` (per request) and ``compute`` (per batch)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.model_config = json.loads(args["model_config"])
        self.name = self.model_config["name"]
        self.params = {k: v["string_value"] for k, v in self.model_config.get("parameters", {}).items()}
        self.inputs = {
            t["name"]: (tuple(int(d) for d in t["dims"]), np.dtype(_CONFIG_DTYPES[t["data_type"]]))
            for t in self.model_config["input"]
        }
        self.outputs = {
            t["name"]: np.dtype(_CONFIG_DTYPES[t["data_type"]]) for t in self.model_config["output"]
        }
        self.model_dir = f"{args['model_repository']}/{args['model_version']}"
        self.setup()

    def setup(self) -> None:
        """Load weights etc.; ``self.params`` holds the config's parameters."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        """Raise RequestError for a bad request; shapes and dtypes are already checked."""

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _read(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {}
        for name, (dims, dtype) in self.inputs.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise RequestError(f"missing input '{name}'")
            array = tensor.as_numpy()
            check_batched(name, array, dims, dtype)
            arrays[name] = array
        self.validate(arrays)
        return arrays

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        good: list[int] = []
        parsed: list[dict[str, np.ndarray]] = []
        for i, request in enumerate(requests):
            if request.is_cancelled():
                responses[i] = _error("request cancelled", getattr(pb_utils.TritonError, "CANCELLED", None))
                continue
            try:
                parsed.append(self._read(request))
                good.append(i)
            except RequestError as e:
                responses[i] = _error(f"{self.name}: {e}", pb_utils.TritonError.INVALID_ARG)
        if not good:
            return responses
        sizes = [next(iter(p.values())).shape[0] for p in parsed]
        batch = {k: np.concatenate([p[k] for p in parsed]) for k in parsed[0]}
        try:
            out = self.compute(batch)
        except RequestError as e:  # a batch-level input problem (rare): fail only these requests
            for i in good:
                responses[i] = _error(f"{self.name}: {e}", pb_utils.TritonError.INVALID_ARG)
            return responses
        except Exception as e:  # answer every request rather than fail the whole execute()
            for i in good:
                responses[i] = _error(f"{self.name}: internal error: {e}", pb_utils.TritonError.INTERNAL)
            return responses
        offsets = np.cumsum([0, *sizes])
        for i, start, stop in zip(good, offsets[:-1], offsets[1:], strict=True):
            tensors = [
                pb_utils.Tensor(
                    name, np.ascontiguousarray(value[start:stop]).astype(self.outputs[name], copy=False)
                )
                for name, value in out.items()
                if name in self.outputs
            ]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses


def _error(message: str, code: Any) -> Any:
    if code is None:
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def onnx_session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session with a fixed intra-op thread count (set per instance)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
