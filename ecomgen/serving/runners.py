"""CPU runners: one ONNX file on ONNX Runtime or OpenVINO, ``run(feeds) -> {output: array}``.

The runtime and precision of each network are chosen per host by measurement
(:mod:`ecomgen.serving.calibrate`); a spec or the ``--cpu-runtime`` flag can pin them.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

RUNTIMES = ("onnxruntime", "openvino-f32", "openvino-bf16")
# Written next to a network's ONNX file by the calibration: {"runtime": ..., ...}.
CHOICE_FILE = "runtime.json"
# Overrides every "auto" choice (set by `ecomgen serve --cpu-runtime`).
RUNTIME_ENV = "ECOMGEN_CPU_RUNTIME"
FALLBACK_RUNTIME = "openvino-f32"
# Networks with variable image sides run a batch in calls of at most this many input pixels
# (rows x H x W): one 512x512 image, or 16 images of 128x128. A runtime's activation memory
# grows with the call: 16 requests at the largest size the upscaler accepts (512x512 -> 2048x2048)
# in one call took the server to 6.7 GB PSS (deploy/measured, 2026-12-02).
PIXELS_PER_CALL = 512 * 512
# ...and compiled shapes are kept for at most this many input pixels in all (each holds buffers).
PIXELS_CACHED = 4 * PIXELS_PER_CALL


def spatial_rows(shape: Sequence[int], pixels_per_call: int | None = None) -> int:
    """Rows per call for an input of ``shape`` ([N, C, H, W]): the pixel budget's share, at least 1."""
    budget = PIXELS_PER_CALL if pixels_per_call is None else pixels_per_call
    pixels = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(1, budget // max(1, pixels))


def row_chunks(total: int, rows: int) -> list[int]:
    """``total`` rows as calls of at most ``rows``: (5, 2) -> [2, 2, 1]."""
    return [min(rows, total - i) for i in range(0, total, rows)]


def split_rows(feeds: dict[str, np.ndarray], rows: int) -> list[dict[str, np.ndarray]]:
    total = int(next(iter(feeds.values())).shape[0])
    return [{k: v[i : i + rows] for k, v in feeds.items()} for i in range(0, total, rows)]


def concat_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Runner(Protocol):
    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def onnx_session(path: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with a fixed intra-op thread count (set per instance)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner:
    """ONNX Runtime, one session with dynamic shapes."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.session = onnx_session(path, threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Variable sides beyond the batch axis: bound each call's memory by the pixel budget.
        self.spatial = any(
            any(not isinstance(d, int) for d in i.shape[1:]) for i in self.session.get_inputs()
        )

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.spatial:
            return self._call(feeds)
        rows = spatial_rows(next(iter(feeds.values())).shape)
        return concat_outputs([self._call(part) for part in split_rows(feeds, rows)])

    __call__ = run


class OpenVinoRunner:
    """OpenVINO's CPU plugin, one stream, static shapes, fp32 or bf16.

    Static shapes beat dynamic ones on this plugin. For networks whose only dynamic axis
    is the batch, a model is compiled per power-of-two batch size up to ``max_batch`` at
    start, and a batch of another size runs as power-of-two chunks (37 = 32 + 4 + 1): no
    padding waste and no compile on the serving path. Networks with other dynamic axes
    (image sides) run a batch in calls of at most ``PIXELS_PER_CALL`` input pixels, compile
    each new call shape on first use, and keep the most recent compiled shapes: at most
    ``cache_size`` of them and ``PIXELS_CACHED`` input pixels in all.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        max_batch: int = 1,
        precision: str = "f32",
        cache_size: int = 16,
        compile_sizes: Sequence[int] | None = None,
    ) -> None:
        import openvino as ov

        self.name = f"openvino-{precision}"
        self.core = ov.Core()
        # Precision pinned: on CPUs with bf16 hardware OpenVINO would otherwise pick bf16 itself.
        self.config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.model = self.core.read_model(str(path))
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        self.input_names = [t.get_any_name() for t in self.model.inputs]
        self.batch_only = all(
            all(not d.is_dynamic for d in list(t.get_partial_shape())[1:]) for t in self.model.inputs
        )
        self.sizes = (
            sorted(compile_sizes)
            if compile_sizes
            else [1 << i for i in range(max(1, max_batch).bit_length()) if (1 << i) <= max_batch]
        )
        self.cache_size = cache_size
        self.compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()
        if self.batch_only:
            for batch in self.sizes:
                self._request(tuple((batch, *self._static_dims(n)) for n in self.input_names))

    def _static_dims(self, name: str) -> tuple[int, ...]:
        shape = self.model.input(name).get_partial_shape()
        return tuple(int(d.get_length()) for d in list(shape)[1:])

    def _request(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        request = self.compiled.get(shapes)
        if request is not None:
            self.compiled.move_to_end(shapes)
            return request
        static = self.model.clone()
        static.reshape(dict(zip(self.input_names, [list(s) for s in shapes], strict=True)))
        request = self.core.compile_model(static, "CPU", self.config).create_infer_request()
        self.compiled[shapes] = request
        if not self.batch_only:
            while len(self.compiled) > 1 and (
                len(self.compiled) > self.cache_size or self._cached_pixels() > PIXELS_CACHED
            ):
                self.compiled.popitem(last=False)
        return request

    def _cached_pixels(self) -> int:
        return sum(shapes[0][0] * int(np.prod(shapes[0][2:])) for shapes in self.compiled)

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
        if self.batch_only:
            sizes = self.chunks(total)
        else:
            sizes = row_chunks(total, spatial_rows(next(iter(feeds.values())).shape))
        for size in sizes:
            chunk = {k: np.ascontiguousarray(v[start : start + size]) for k, v in feeds.items()}
            request = self._request(tuple(chunk[n].shape for n in self.input_names))
            result = request.infer(chunk)
            for name in self.output_names:
                # infer() returns views into the request's buffers, reused by the next call.
                parts[name].append(np.array(result[name]))
            start += size
        return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}

    __call__ = run


def make_runner(path: str | Path, runtime: str, threads: int, max_batch: int, max_chunk: int = 0) -> Runner:
    """The runner for ``runtime`` (one of RUNTIMES); ``max_chunk``: the largest batch one OpenVINO
    call computes (from this host's calibration; 0: ``max_batch``)."""
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads)
    if runtime in ("openvino-f32", "openvino-bf16"):
        sizes = None
        if 0 < max_chunk < max_batch:
            sizes = [1 << i for i in range(max_chunk.bit_length()) if (1 << i) <= max_chunk]
        return OpenVinoRunner(path, threads, max_batch, runtime.split("-", 1)[1], compile_sizes=sizes)
    raise ValueError(f"unknown CPU runtime {runtime!r}; expected one of {RUNTIMES}")


def calibrated_chunk(onnx_path: Path) -> int:
    """The largest batch per call this host's calibration chose for the network (0: none)."""
    choice = onnx_path.with_name(f"{onnx_path.stem}.{CHOICE_FILE}")
    if not choice.exists():
        return 0
    return int(json.loads(choice.read_text()).get("max_chunk", 0))


def resolve_runtime(requested: str, onnx_path: Path) -> str:
    """``auto`` -> the env override, else the calibrated choice beside the ONNX file, else the fallback."""
    if requested != "auto":
        return requested
    forced = os.environ.get(RUNTIME_ENV, "")
    if forced and forced != "auto":
        return forced
    choice = onnx_path.with_name(f"{onnx_path.stem}.{CHOICE_FILE}")
    if choice.exists():
        runtime = str(json.loads(choice.read_text()).get("runtime", FALLBACK_RUNTIME))
        if runtime in RUNTIMES:
            return runtime
    return FALLBACK_RUNTIME
