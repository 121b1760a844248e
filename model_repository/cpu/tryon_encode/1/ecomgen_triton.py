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

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-request transform after ``validate`` (e.g. resize variable-size images), so the
        requests of one batch can be concatenated."""
        return arrays

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
        return self.prepare(arrays)

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
            except Exception as e:  # a bug in one request's preparation must not fail its neighbours
                responses[i] = _error(f"{self.name}: internal error: {e}", pb_utils.TritonError.INTERNAL)
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


class OnnxRuntimeRunner:
    """``run(feeds) -> {output name: array}`` on ONNX Runtime, one dynamic-batch session."""

    def __init__(self, path: str, threads: int) -> None:
        self.session = onnx_session(path, threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))


class OpenVinoRunner:
    """The same contract on OpenVINO's CPU plugin, fp32, one stream, static shapes.

    Static shapes were +28% over ONNX Runtime at batch 32 on the benchmark machine
    (benchmarks/results, roofline). A model is compiled per power-of-two batch size up to
    ``max_batch`` (all 64 sizes would hold ~1.3 GB of buffers; seven hold ~0.2 GB), and a
    batch of another size runs as power-of-two chunks (37 = 32 + 4 + 1): no padding
    waste, no compile stall on the serving path.
    """

    def __init__(self, path: str, threads: int, max_batch: int, precision: str = "f32") -> None:
        import openvino as ov

        self.core = ov.Core()
        # Precision pinned (default f32): on CPUs with AMX/avx512_bf16 OpenVINO would
        # otherwise pick bf16 by itself.
        self.config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        model = self.core.read_model(path)
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.sizes = [1 << i for i in range(max(1, max_batch).bit_length()) if (1 << i) <= max_batch]
        self.requests: dict[int, Any] = {}
        for batch in self.sizes:
            static = model.clone()
            static.reshape({t.get_any_name(): [batch, *t.get_partial_shape()[1:]] for t in static.inputs})
            self.requests[batch] = self.core.compile_model(static, "CPU", self.config).create_infer_request()

    def chunks(self, batch: int) -> list[int]:
        """Largest compiled sizes first: 37 -> [32, 4, 1]."""
        out = []
        for size in reversed(self.sizes):
            while batch >= size:
                out.append(size)
                batch -= size
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = int(next(iter(feeds.values())).shape[0])
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        start = 0
        for size in self.chunks(total):
            chunk = {k: v[start : start + size] for k, v in feeds.items()}
            result = self.requests[size].infer(chunk)
            for name in self.output_names:
                # infer() returns views into the request's buffers, reused by the next call.
                parts[name].append(np.array(result[name]))
            start += size
        return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}


def cpu_runner(path: str, params: dict[str, str], max_batch: int) -> Any:
    """The runner named by the config's ``runtime`` parameter (spec ``cpu_runtime``)."""
    runtime = params.get("runtime", "onnxruntime")
    threads = int(params["intra_op_threads"])
    if runtime == "openvino":
        return OpenVinoRunner(path, threads, max_batch, params.get("precision", "f32"))
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads)
    raise ValueError(f"unknown runtime {runtime!r} (expected openvino or onnxruntime)")
