"""The baseline: what a team would build instead of Triton, for any served model.

The model's networks in eager PyTorch, behind a plain ``grpcio`` server that speaks the
KServe v2 ``GRPCInferenceService`` (the protocol Triton speaks), so the same Locust users,
``tritonclient``, ``ProductClient`` and even perf_analyzer hit both servers unchanged.
One request at a time: a single worker thread and a lock around the pipeline; no
batching across requests.

The pipeline is the served model's own, step by step in the order the spec wires them
(``ecomgen.spec.wire``): its Python steps are the very handlers Triton runs
(``ecomgen.serving.handlers``), its network steps the PyTorch modules the ONNX files are
exported from. So a request gets the same checks (``ecomgen.serving.step.run_batch``:
INVALID_ARGUMENT naming the problem) and the same images, within the CPU runtime's
rounding; ``compare.py`` measures how close.

Thread budget: ``--threads`` defaults to ``cpu_instances * cpu_threads`` of the served
spec (the threads Triton's instances get), and torch's inter-op pool is pinned to one
thread, so both servers get the same cores.

    python -m benchmarks.baseline_server --port 8101                     # product_gan, trained weights
    python -m benchmarks.baseline_server --model tryon --weights tiny --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import torch
from torch import nn
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from benchmarks.harness import DEFAULT_MODEL, WEIGHT_CHOICES, Weights, resolve_weights
from ecomgen.errors import DeadlineExceeded, RequestError
from ecomgen.registry import REGISTRY
from ecomgen.serving.handlers import load_handler
from ecomgen.serving.handlers.pipeline import Stage, StagedPipeline
from ecomgen.serving.step import Request, StepConfig, TensorInfo, run_batch
from ecomgen.spec import NetworkSpec, NetworkStep, PythonStep, ServedModel, wire
from ecomgen_client.contracts import TensorSpec, contract_parameters

log = logging.getLogger("baseline")
VERSION = "1"


def tensor_info(t: TensorSpec) -> TensorInfo:
    return TensorInfo(
        t.name, t.numpy_dtype, t.dims, t.optional, t.value_range, t.min_dims, t.max_dims, t.max_bytes
    )


def step_config(
    name: str,
    max_batch: int,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    params: dict[str, str],
) -> StepConfig:
    """What a step would read from its generated config.pbtxt (tensors, bounds, parameters)."""
    extra: dict[str, str] = {}
    for t in (*inputs, *outputs):
        extra.update(contract_parameters(t))
    return StepConfig(
        name=name,
        max_batch_size=max_batch,
        inputs={t.name: tensor_info(t) for t in inputs},
        outputs={t.name: tensor_info(t) for t in outputs},
        params={**extra, **params},
    )


def torch_compute(module: nn.Module, net: NetworkSpec) -> Any:
    """A network step in eager PyTorch: named float32 inputs -> named outputs."""

    def compute(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[t.name], dtype=np.float32)) for t in net.inputs]
        with torch.inference_mode():
            out = module(*args)
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return {t.name: o.numpy() for t, o in zip(net.outputs, outs, strict=True)}

    return compute


class EagerPipeline(StagedPipeline):
    """Every step of a served model in this process: handlers as served, networks in PyTorch."""

    def __init__(self, model: ServedModel, modules: dict[str, nn.Module]) -> None:
        self.model = model
        self.modules = {k: m.eval() for k, m in modules.items()}
        c = model.contract
        super().__init__(step_config(c.name, c.max_batch_size, c.inputs, c.outputs, {}))

    def setup(self) -> None:
        self.stages = []
        for w in wire(self.model):
            step = w.step
            if isinstance(step, NetworkStep):
                compute = torch_compute(self.modules[step.network.name], step.network)
            else:
                assert isinstance(step, PythonStep)
                config = step_config(
                    step.name, self.model.step_max_batch(step), step.inputs, step.outputs, dict(step.params)
                )
                handler = load_handler(step.handler)(config)
                if not self.stages:
                    self.first = handler
                compute = handler.compute
            self.stages.append(Stage(step.name, dict(w.input_map), dict(w.output_map), compute))


class BaselineService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 inference service for one model, computed one request at a time."""

    def __init__(self, model: ServedModel, modules: dict[str, nn.Module]) -> None:
        self.model = model
        self.contract = model.contract
        self.pipeline = EagerPipeline(model, modules)
        self.lock = threading.Lock()  # belt and braces next to max_workers=1
        self.inference_count = 0
        self.execution_count = 0

    # --- health and metadata: what tritonclient, Locust and perf_analyzer ask for --------

    def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ModelReadyResponse(ready=request.name == self.contract.name)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="ecomgen-baseline", version=torch.__version__)

    def _check_model(self, name: str, context: Any) -> None:
        if name != self.contract.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    def _shape(self, t: TensorSpec) -> list[int]:
        return [-1, *t.dims] if self.contract.batched else list(t.dims)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        self._check_model(request.name, context)
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=self.contract.name,
            versions=[VERSION],
            platform="pytorch_eager",
            inputs=[meta(name=t.name, datatype=t.dtype, shape=self._shape(t)) for t in self.contract.inputs],
            outputs=[
                meta(name=t.name, datatype=t.dtype, shape=self._shape(t)) for t in self.contract.outputs
            ],
        )

    def ModelConfig(self, request: Any, context: Any) -> Any:
        """The cpu target's config of the model (perf_analyzer reads max_batch_size and the inputs)."""
        from export.repository import model_configs

        self._check_model(request.name, context)
        (repo_model,) = model_configs(dataclasses.replace(self.model, fuse_on_cpu=True), "cpu")
        config = repo_model.config
        config.ClearField("dynamic_batching")  # this server never batches across requests
        config.backend = "pytorch_eager"
        for key in ("pipeline", "runtime", "handler"):
            if key in config.parameters:
                del config.parameters[key]
        return service_pb2.ModelConfigResponse(config=config)

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(
            models=[index(name=self.contract.name, version=VERSION, state="READY")]
        )

    def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = service_pb2.ModelStatistics(
            name=self.contract.name,
            version=VERSION,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
        )
        return service_pb2.ModelStatisticsResponse(model_stats=[stats])

    # --- inference ------------------------------------------------------------------

    def _read_inputs(self, request: Any) -> dict[str, np.ndarray]:
        if len(request.raw_input_contents) != len(request.inputs):
            raise RequestError("inputs must be sent as raw_input_contents (as tritonclient does)")
        arrays: dict[str, np.ndarray] = {}
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            try:
                spec = self.contract.input(tensor.name)
            except KeyError:
                raise RequestError(f"unexpected input '{tensor.name}'") from None
            if tensor.datatype != spec.dtype:
                raise RequestError(
                    f"input '{tensor.name}' has datatype {tensor.datatype}, expected {spec.dtype}"
                )
            try:
                flat = (
                    deserialize_bytes_tensor(raw)
                    if spec.dtype == "BYTES"
                    else np.frombuffer(raw, spec.numpy_dtype)
                )
                arrays[tensor.name] = flat.reshape(tuple(tensor.shape))
            except Exception:
                raise RequestError(
                    f"input '{tensor.name}': {len(raw)} bytes do not fit shape {list(tensor.shape)}"
                ) from None
        if self.contract.batched:
            sizes = {int(a.shape[0]) for a in arrays.values() if a.ndim}
            if sizes and max(sizes) > self.contract.max_batch_size:
                raise RequestError(f"batch size above max_batch_size {self.contract.max_batch_size}")
        return arrays

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request through the pipeline; raises RequestError for a bad request."""
        with self.lock:
            (result,) = run_batch(self.pipeline, [Request(arrays)])
        if isinstance(result, Exception):
            raise result
        return result

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self._check_model(request.model_name, context)
        try:
            outputs = self.run(self._read_inputs(request))
        except (RequestError, DeadlineExceeded) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.contract.name}: {e}")
        except Exception as e:
            context.abort(grpc.StatusCode.INTERNAL, f"{self.contract.name}: {type(e).__name__}: {e}")
        wanted = [o.name for o in request.outputs] or [
            t.name for t in self.contract.outputs if t.name in outputs
        ]
        rows = next(iter(outputs.values())).shape[0] if self.contract.batched and outputs else 1
        self.inference_count += rows
        self.execution_count += 1
        tensors, raw = [], []
        for name in wanted:
            if name not in outputs:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{self.contract.name}: unknown output '{name}'"
                )
            value = outputs[name]
            spec = self.contract.output(name)
            data = serialize_byte_tensor(value).item() if spec.dtype == "BYTES" else value.tobytes()
            tensors.append(
                service_pb2.ModelInferResponse.InferOutputTensor(
                    name=name, datatype=spec.dtype, shape=list(value.shape)
                )
            )
            raw.append(data)
        return service_pb2.ModelInferResponse(
            model_name=self.contract.name,
            model_version=VERSION,
            id=request.id,
            outputs=tensors,
            raw_output_contents=raw,
        )


def default_threads(model: ServedModel) -> int:
    return model.cpu_instances * model.cpu_threads


def serve(model: ServedModel, weights: Weights, host: str, port: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    service = BaselineService(model, weights.modules(model))
    # Warm up so the first timed request does not pay for allocator and kernel selection.
    from benchmarks.payloads import payload

    service.run(payload(model.name).inputs)
    # max_workers=1: gRPC queues further RPCs until the worker is free, i.e. one request at a time.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    server.start()
    log.info(
        "baseline %s on %s:%d (%s; torch threads %d)",
        model.name,
        host,
        bound,
        weights.label([model]),
        threads,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.is_set():
        stop.wait(0.5)
        if os.getppid() != parent:  # whoever started us was killed (e.g. a test timeout): don't linger
            log.warning("parent process %d is gone; stopping", parent)
            break
    server.stop(grace=2).wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=REGISTRY.names(), default=DEFAULT_MODEL)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: as served)")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto", help="auto: trained when present")
    p.add_argument("--weights-seed", type=int, default=0, help="seed of --weights tiny")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    model = REGISTRY[opt.model]
    weights = resolve_weights(opt.weights, [model], opt.weights_seed)
    started = time.monotonic()
    serve(model, weights, opt.host, opt.port, opt.threads or default_threads(model))
    log.info("stopped after %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
