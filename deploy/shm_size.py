"""Size the pod's /dev/shm for the Python-backend models of a Triton model repository.

    python deploy/shm_size.py model_repository/cpu            # prints the sizeLimit, e.g. 896Mi
    python deploy/shm_size.py model_repository/cpu --table    # the per-model arithmetic as well

Triton's Python backend gives every model instance (one stub process each) its own shared
memory region in /dev/shm. The region starts at ``shm-default-byte-size`` (the launcher passes
16 MiB) and grows by ``shm-growth-byte-size`` when a batch does not fit; it does not shrink. A
batch's input and output tensors all live in that region while the batch executes, so an
instance needs room for its largest batch:

    batch bytes = max_batch_size (1 when 0) x sum over inputs and outputs of
                  element size x product of dims

Variable dims (-1) take their maximum from the config parameter ``max_shape.<tensor>`` (a JSON
list of the dims, maxima filled in); BYTES elements take theirs from ``max_bytes.<tensor>``
(4-byte length prefix added here). Until the repository generator writes those parameters, the
fallbacks below are the limits the serving code enforces (export/triton_python/tryon_common.py:
sides <= 2048 px, encoded images <= 16 MiB); each use is reported as a fallback.

    per instance = max(shm-default-byte-size, batch bytes rounded up to the growth step)
    total        = sum over instances x (1 + HEADROOM), rounded up to 64 MiB

The headroom covers the allocator's fragmentation and the request/response bookkeeping the
backend keeps in the same region. Exceeding an emptyDir's sizeLimit gets the pod *evicted*
(kubernetes#28272), so every instance is assumed to reach its maximum at the same time.
Only the standard library and tritonclient's protobuf stubs are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

MiB = 1 << 20
# The launcher's --backend-config=python,shm-default-byte-size (ecomgen/server.py).
DEFAULT_REGION_BYTES = 16 * MiB
# Triton's default shm-growth-byte-size.
GROWTH_BYTES = 1 * MiB
HEADROOM = 0.25
ROUND_TO = 64 * MiB
# Backends whose models run in a Python stub with its own region (ecomgen = our Python-based backend).
PYTHON_BACKENDS = frozenset({"python", "ecomgen"})
# Fallbacks until every config carries max_shape.<tensor> / max_bytes.<tensor>: the limits the
# serving code checks before it decodes anything (tryon_common.MAX_SIDE, MAX_ENCODED_BYTES).
FALLBACK_MAX_DIM = 2048
FALLBACK_MAX_BYTES = 16 * MiB
STRING_LENGTH_PREFIX = 4

ELEMENT_BYTES = {
    mc.TYPE_BOOL: 1,
    mc.TYPE_UINT8: 1,
    mc.TYPE_INT8: 1,
    mc.TYPE_UINT16: 2,
    mc.TYPE_INT16: 2,
    mc.TYPE_FP16: 2,
    mc.TYPE_BF16: 2,
    mc.TYPE_UINT32: 4,
    mc.TYPE_INT32: 4,
    mc.TYPE_FP32: 4,
    mc.TYPE_UINT64: 8,
    mc.TYPE_INT64: 8,
    mc.TYPE_FP64: 8,
}


@dataclass
class ModelShm:
    name: str
    instances: int
    batch: int
    row_bytes: int
    fallbacks: list[str] = field(default_factory=list)

    @property
    def batch_bytes(self) -> int:
        return self.batch * self.row_bytes

    @property
    def region_bytes(self) -> int:
        grown = math.ceil(self.batch_bytes / GROWTH_BYTES) * GROWTH_BYTES
        return max(DEFAULT_REGION_BYTES, grown)

    @property
    def total_bytes(self) -> int:
        return self.instances * self.region_bytes


def load_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _param(config: mc.ModelConfig, key: str) -> str | None:
    return config.parameters[key].string_value if key in config.parameters else None


def tensor_bytes(config: mc.ModelConfig, tensor: mc.ModelInput | mc.ModelOutput) -> tuple[int, list[str]]:
    """Bytes of one batch row of ``tensor`` at its largest, and the fallbacks that were used."""
    fallbacks: list[str] = []
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        declared = _param(config, f"max_shape.{tensor.name}")
        if declared is not None:
            maxima = [int(d) for d in json.loads(declared)]
            if len(maxima) != len(dims) or any(m < 0 for m in maxima):
                raise ValueError(
                    f"{config.name}: max_shape.{tensor.name}={declared} does not fit dims {dims}"
                )
            dims = maxima
        else:
            dims = [FALLBACK_MAX_DIM if d < 0 else d for d in dims]
            fallbacks.append(f"{tensor.name}: -1 dims -> {FALLBACK_MAX_DIM}")
    if tensor.data_type == mc.TYPE_STRING:
        declared = _param(config, f"max_bytes.{tensor.name}")
        if declared is not None:
            element = int(declared) + STRING_LENGTH_PREFIX
        else:
            element = FALLBACK_MAX_BYTES + STRING_LENGTH_PREFIX
            fallbacks.append(f"{tensor.name}: BYTES -> {FALLBACK_MAX_BYTES // MiB} MiB")
    else:
        element = ELEMENT_BYTES[tensor.data_type]
    return element * math.prod(dims), fallbacks


def instance_count(config: mc.ModelConfig, gpus_per_pod: int) -> int:
    if not config.instance_group:
        return 1  # Triton's default for a CPU model; KIND_AUTO on a GPU host gives one per GPU
    total = 0
    for group in config.instance_group:
        count = group.count or 1
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            count *= len(group.gpus) or gpus_per_pod
        total += count
    return total


def model_shm(config: mc.ModelConfig, gpus_per_pod: int = 1) -> ModelShm:
    row = 0
    fallbacks: list[str] = []
    for tensor in [*config.input, *config.output]:
        nbytes, used = tensor_bytes(config, tensor)
        row += nbytes
        fallbacks += used
    return ModelShm(
        name=config.name,
        instances=instance_count(config, gpus_per_pod),
        batch=max(1, config.max_batch_size),
        row_bytes=row,
        fallbacks=fallbacks,
    )


def repository_shm(repository: Path, gpus_per_pod: int = 1) -> list[ModelShm]:
    """The Python-backend models of ``repository`` (one directory per model with a config.pbtxt)."""
    models = []
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = load_config(path)
        if config.backend in PYTHON_BACKENDS:
            models.append(model_shm(config, gpus_per_pod))
    return models


def required_bytes(models: list[ModelShm]) -> int:
    raw = sum(m.total_bytes for m in models)
    return math.ceil(raw * (1 + HEADROOM) / ROUND_TO) * ROUND_TO


def quantity(nbytes: int) -> str:
    """A Kubernetes quantity: Gi when exact, else Mi."""
    return f"{nbytes // (1 << 30)}Gi" if nbytes % (1 << 30) == 0 else f"{math.ceil(nbytes / MiB)}Mi"


def parse_quantity(value: str) -> int:
    """Bytes of a binary-suffixed Kubernetes quantity (Ki/Mi/Gi/Ti) or a plain integer."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    for suffix, scale in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * scale)
    return int(value)


def table(models: list[ModelShm]) -> str:
    lines = [
        "| model | instances | batch | bytes/row | batch bytes | region MiB | total MiB | fallbacks |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in models:
        lines.append(
            f"| {m.name} | {m.instances} | {m.batch} | {m.row_bytes:,} | {m.batch_bytes:,} | "
            f"{m.region_bytes / MiB:.0f} | {m.total_bytes / MiB:.0f} | {'; '.join(m.fallbacks) or '-'} |"
        )
    raw = sum(m.total_bytes for m in models)
    lines.append(
        f"\nsum {raw / MiB:.1f} MiB x {1 + HEADROOM:.2f} headroom, rounded up to {ROUND_TO // MiB} MiB: "
        f"**{quantity(required_bytes(models))}**"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repository", type=Path, help="a target's repository, e.g. model_repository/cpu")
    p.add_argument("--gpus-per-pod", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the per-model arithmetic to stderr")
    p.add_argument("--json", action="store_true", help="print the details as JSON instead")
    opt = p.parse_args(argv)
    if not opt.repository.is_dir():
        p.error(f"{opt.repository} is not a directory")
    models = repository_shm(opt.repository, opt.gpus_per_pod)
    need = required_bytes(models)
    if opt.json:
        payload = {
            "size_limit": quantity(need),
            "bytes": need,
            "models": [
                {**m.__dict__, "batch_bytes": m.batch_bytes, "region_bytes": m.region_bytes} for m in models
            ],
        }
        print(json.dumps(payload, indent=2))
        return 0
    if opt.table:
        print(table(models), file=sys.stderr)
    print(quantity(need))
    return 0


if __name__ == "__main__":
    sys.exit(main())
