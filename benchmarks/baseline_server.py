"""The baseline: what a user would pick instead of Triton.

The same PyTorch generator, in eager mode, behind a plain ``grpcio`` server that
speaks the KServe v2 ``GRPCInferenceService`` (the protocol Triton speaks), so the
same Locust users, ``tritonclient``, ``ProductClient`` and even perf_analyzer hit
both servers unchanged. One request at a time: a single worker thread and a lock
around the forward pass; no batching across requests.

Images are identical to Triton's: the same seed -> latent mapping
(``ecomgen_common.latents_from_seeds``), one-hot classes and uint8 HWC output.

Thread budget: ``--threads`` defaults to ``cpu_instances * cpu_threads`` of the
served spec (the ONNX Runtime intra-op threads Triton's instances get), and
torch's inter-op pool is pinned to one thread, so both servers get the same cores.

    python -m benchmarks.baseline_server --port 8101            # trained checkpoint, else random weights
    python -m benchmarks.baseline_server --random-ngf 48 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.common import RANDOM_NGF, Weights, load_generator, resolve_weights
from ecomgen_client.specs import PRODUCT_GAN, ModelSpec
from export.triton_python.ecomgen_common import (
    RequestError,
    check_batched,
    check_range,
    latents_from_seeds,
    one_hot,
    to_uint8_hwc,
)

log = logging.getLogger("baseline")
VERSION = "1"


class BaselineService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 inference service for one model, computed one request at a time."""

    def __init__(self, generator: torch.nn.Module, spec: ModelSpec = PRODUCT_GAN) -> None:
        self.generator = generator.eval()
        self.spec = spec
        self.lock = threading.Lock()  # belt and braces next to max_workers=1
        self.inference_count = 0
        self.execution_count = 0

    # --- health and metadata: what tritonclient, Locust and perf_analyzer ask for --------

    def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ModelReadyResponse(ready=request.name == self.spec.name)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="ecomgen-baseline", version=torch.__version__)

    def _check_model(self, name: str, context: Any) -> None:
        if name != self.spec.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        self._check_model(request.name, context)
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=self.spec.name,
            versions=[VERSION],
            platform="pytorch_eager",
            inputs=[meta(name=t.name, datatype=t.dtype, shape=[-1, *t.dims]) for t in self.spec.inputs],
            outputs=[meta(name=t.name, datatype=t.dtype, shape=[-1, *t.dims]) for t in self.spec.outputs],
        )

    def ModelConfig(self, request: Any, context: Any) -> Any:
        """The cpu target's config (perf_analyzer reads max_batch_size and the inputs from it)."""
        from export.repository import cpu_models

        self._check_model(request.name, context)
        (model,) = cpu_models(self.spec)
        config = model.config
        config.ClearField("dynamic_batching")  # this server never batches across requests
        config.backend = "pytorch_eager"
        return service_pb2.ModelConfigResponse(config=config)

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(
            models=[index(name=self.spec.name, version=VERSION, state="READY")]
        )

    def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = service_pb2.ModelStatistics(
            name=self.spec.name,
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
                spec = self.spec.input(tensor.name)
            except KeyError:
                raise RequestError(f"unexpected input '{tensor.name}'") from None
            if tensor.datatype != spec.dtype:
                raise RequestError(
                    f"input '{tensor.name}' has datatype {tensor.datatype}, expected {spec.dtype}"
                )
            array = np.frombuffer(raw, dtype=spec.numpy_dtype)
            try:
                array = array.reshape(tuple(tensor.shape))
            except ValueError:
                shape = list(tensor.shape)
                raise RequestError(
                    f"input '{tensor.name}': {len(raw)} bytes do not fit shape {shape}"
                ) from None
            check_batched(tensor.name, array, spec.dims, spec.numpy_dtype)
            if spec.value_range is not None:
                check_range(tensor.name, array, *spec.value_range)
            arrays[tensor.name] = array
        missing = [t.name for t in self.spec.inputs if t.name not in arrays and not t.optional]
        if missing:
            raise RequestError(f"missing input(s) {missing}")
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) != 1:
            raise RequestError(f"inputs disagree on the batch size: {sorted(sizes)}")
        if sizes.pop() > self.spec.max_batch_size:
            raise RequestError(f"batch size above max_batch_size {self.spec.max_batch_size}")
        return arrays

    def generate(self, class_ids: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(latents_from_seeds(seeds, self.spec.latent_dim))
        y = torch.from_numpy(one_hot(class_ids, len(self.spec.class_names)))
        with self.lock, torch.inference_mode():
            images = self.generator(z, y).numpy()
        return to_uint8_hwc(images)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self._check_model(request.model_name, context)
        try:
            arrays = self._read_inputs(request)
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.spec.name}: {e}")
        images = self.generate(arrays["class_id"], arrays["seed"])
        self.inference_count += images.shape[0]
        self.execution_count += 1
        out = self.spec.output("image")
        return service_pb2.ModelInferResponse(
            model_name=self.spec.name,
            model_version=VERSION,
            id=request.id,
            outputs=[
                service_pb2.ModelInferResponse.InferOutputTensor(
                    name=out.name, datatype=out.dtype, shape=list(images.shape)
                )
            ],
            raw_output_contents=[images.tobytes()],
        )


def default_threads(spec: ModelSpec = PRODUCT_GAN) -> int:
    return spec.cpu_instances * spec.cpu_threads


def serve(weights: Weights, host: str, port: int, threads: int, spec: ModelSpec = PRODUCT_GAN) -> None:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    service = BaselineService(load_generator(weights), spec)
    # Warm up so the first timed request does not pay for allocator and kernel selection.
    service.generate(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int64))
    # max_workers=1: gRPC queues further RPCs until the worker is free, i.e. one request at a time.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    server.start()
    log.info("baseline %s on %s:%d (%s; torch threads %d)", spec.name, host, bound, weights.label, threads)
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
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--threads", type=int, default=default_threads(), help="torch intra-op threads")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the trained checkpoint if present")
    p.add_argument("--random-ngf", type=int, default=None, help="serve random weights of this width instead")
    p.add_argument("--random-seed", type=int, default=0)
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if opt.random_ngf is not None:
        weights = Weights(None, opt.random_ngf, opt.random_seed)
    else:
        weights = resolve_weights(opt.checkpoint, ngf=RANDOM_NGF)
    started = time.monotonic()
    serve(weights, opt.host, opt.port, opt.threads)
    log.info("stopped after %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
