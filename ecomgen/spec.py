"""The served-model spec: one typed object per public model, with its declared steps.

A :class:`ServedModel` wraps a public :class:`~ecomgen_client.contracts.Contract` with
the steps that compute it, in order: :class:`PythonStep` (pre/post processing in the
``ecomgen`` Python backend) and :class:`NetworkStep` (an exported network: ONNX on a CPU
runtime on the cpu target, a TensorRT plan on the gpu target). Export, the TensorRT
profile, the generated ``config.pbtxt`` files, the benchmarks and the tests all read it.

Ensemble wiring comes from tensor names (:func:`wire`): a step input is fed by the
latest earlier producer of a tensor with that name (a public input, or an earlier step's
output), unless the step ``bind``\\ s it to another name; public outputs come from the
latest producer of their name. Dtypes and dims are checked at import time, so a spec
that cannot be wired fails before any file is written.

torch-free: the serving layer and the client-facing tools import this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ecomgen_client.contracts import Contract, TensorSpec

TARGETS = ("cpu", "gpu")
# CPU runtimes a network step can run on; "auto" = chosen per host by `ecomgen.serving.calibrate`.
CPU_RUNTIMES = ("auto", "onnxruntime", "openvino-f32", "openvino-bf16")
# Backend of every Python model: Triton's Python-based backend that imports ecomgen.serving.
BACKEND = "ecomgen"
# The per-request deadline travels between the Python steps of an ensemble as this tensor.
DEADLINE = TensorSpec("deadline_ns", "INT64", (1,))


@dataclass(frozen=True)
class Batching:
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int


@dataclass(frozen=True)
class QueuePolicy:
    """Bounded queue: overload is rejected instead of growing memory without limit."""

    max_queue_size: int
    default_timeout_us: int
    allow_timeout_override: bool = True


@dataclass(frozen=True)
class OptimizationProfile:
    """TensorRT profile: (min, opt, max) over the batch axis and over every variable dim.

    ``dims`` maps an input name to one (min, opt, max) triple per -1 in its dims, in order.
    """

    min_batch: int
    opt_batch: int
    max_batch: int
    dims: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"profile needs 1 <= min <= opt <= max, got {self}")
        for name, ranges in self.dims:
            if any(not 1 <= lo <= opt <= hi for lo, opt, hi in ranges):
                raise ValueError(f"profile for {name}: every range needs 1 <= min <= opt <= max")

    def shapes(self, tensor: TensorSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        ranges = iter(dict(self.dims).get(tensor.name, ()))
        out: list[list[int]] = [[self.min_batch], [self.opt_batch], [self.max_batch]]
        for d in tensor.dims:
            triple = (d, d, d) if d >= 0 else next(ranges, None)
            if triple is None:
                raise ValueError(f"{tensor.name}: variable dim without a profile range")
            for shape, v in zip(out, triple, strict=True):
                shape.append(v)
        return tuple(out[0]), tuple(out[1]), tuple(out[2])


@dataclass(frozen=True)
class NetworkSpec:
    """A network exported to ONNX and compiled to TensorRT (an internal step)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    profile: OptimizationProfile
    batching: Batching
    queue: QueuePolicy
    gpu_instances: int = 1
    onnx_opset: int = 17
    # The ONNX-vs-PyTorch parity gate's bound (export/onnx.py); a network that samples its input
    # at computed coordinates (grid_sample) may need more on the gate's random inputs.
    parity_atol: float = 1e-3
    # ONNX node-name substrings kept in FP32 inside an FP16 engine.
    fp32_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.profile.max_batch != self.max_batch_size:
            raise ValueError(
                f"{self.name}: TensorRT profile max batch {self.profile.max_batch} "
                f"!= max_batch_size {self.max_batch_size}"
            )
        for t in (*self.inputs, *self.outputs):
            if t.dtype != "FP32":
                raise ValueError(f"{self.name}.{t.name}: network tensors are FP32, not {t.dtype}")
        for t in self.inputs:
            self.profile.shapes(t)  # every variable dim has a range

    def input(self, name: str) -> TensorSpec:
        return _find(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _find(self.outputs, name, self.name)

    def sample_inputs(self, batch: int, seed: int = 0, size: str = "opt") -> dict[str, np.ndarray]:
        """Random inputs of this network, variable dims at the profile's ``size`` (min/opt/max).

        One-hot inputs get a different class in every row; bounded inputs are uniform over
        their range; the rest standard normal.
        """
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        pick = {"min": 0, "opt": 1, "max": 2}[size]
        for t in self.inputs:
            shape = (batch, *self.profile.shapes(t)[pick][1:])
            if t.kind == "onehot":
                arr = np.zeros(shape, t.numpy_dtype)
                arr[np.arange(batch), np.arange(batch) % shape[1]] = 1
            elif t.value_range is not None:
                arr = rng.uniform(t.value_range[0], t.value_range[1], shape).astype(t.numpy_dtype)
            else:
                arr = rng.standard_normal(shape).astype(t.numpy_dtype)
            out[t.name] = arr
        return out


@dataclass(frozen=True)
class PythonStep:
    """A step that runs ``handler`` (``module:Class`` under ``ecomgen.serving.handlers``)."""

    name: str
    handler: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: tuple[tuple[str, str], ...] = ()
    # None: the model's (batching, queue, max_batch_size).
    max_batch_size: int | None = None
    batching: Batching | None = None
    # Files from checkpoints/ that the step reads from its version directory (placed by the build).
    artifacts: tuple[str, ...] = ()
    # Networks the step runs itself when its request needs them (a route an ensemble cannot take:
    # an uploaded photo skips the generator). On the cpu target they run in the step's process;
    # on the gpu target each is its own TensorRT model, called through Triton's BLS API.
    calls: tuple[NetworkSpec, ...] = ()

    @property
    def model_name(self) -> str:
        return self.name


@dataclass(frozen=True)
class NetworkStep:
    """A network as a step; ``bind`` feeds a network input from a differently named tensor."""

    network: NetworkSpec
    bind: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.network.name

    @property
    def model_name(self) -> str:
        return self.network.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.network.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.network.outputs


Step = PythonStep | NetworkStep


@dataclass(frozen=True)
class ServedModel:
    """A public model: its contract, its steps and how it is deployed.

    ``module`` names the ``ecomgen.models`` module (or any importable module; a tuple for
    networks from several) whose ``load_networks(checkpoint_dir)`` / ``tiny_networks(seed)``
    return the step networks by name.
    On the cpu target ``fuse_on_cpu`` runs every step in one Python model (one queue and
    one shared-memory crossing instead of one per step); otherwise the model is a Triton
    ensemble of its steps on both targets.
    """

    contract: Contract
    steps: tuple[Step, ...]
    batching: Batching
    queue: QueuePolicy
    module: str | tuple[str, ...] = ""
    cpu_instances: int = 1
    cpu_threads: int = 2
    cpu_runtime: str = "auto"
    fuse_on_cpu: bool = False
    # Instances of the fused Python model (cpu target, ``fuse_on_cpu``); default cpu_instances.
    # Separate because the model's steps may be shared with other ensembles, which must agree.
    fused_cpu_instances: int = 0
    # False: the model's Python models on the cpu target run one request an execution, without
    # Triton's dynamic batcher. Triton 2.51's batcher can leave requests queued for up to its
    # 500 ms idle wait while the instance is free (traced under a tryon burst on 2 cores), which
    # breaks the one-deadline promise; where a batch of rows costs about as much per row as one
    # row, batching gains nothing to pay for it (benchmarks/results/*-tryon-batcher.md).
    cpu_dynamic_batching: bool = True
    # The server-side deadline when the client sends none (one deadline across all steps).
    deadline_us: int = 10_000_000
    # Bound on requests inside an ensemble, held by its door's admission tickets (Triton 2.51 has
    # no max_inflight_requests); 0 turns admission off. See ecomgen/serving/admission.py.
    max_inflight_requests: int = 64
    training: str = ""
    checkpoints: tuple[str, ...] = ()
    extra_parameters: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"{self.name}: a served model needs at least one step")
        if self.cpu_runtime not in CPU_RUNTIMES:
            raise ValueError(f"{self.name}: cpu_runtime {self.cpu_runtime!r} not in {CPU_RUNTIMES}")
        pref = self.batching.preferred_batch_sizes
        if pref and self.contract.batched and max(pref) > self.contract.max_batch_size:
            raise ValueError(f"{self.name}: preferred batch size above max_batch_size")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate step names {names}")
        wire(self)  # fails here, at import, if the steps cannot be wired by name

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def modules(self) -> tuple[str, ...]:
        return (self.module,) if isinstance(self.module, str) else self.module

    @property
    def networks(self) -> tuple[NetworkSpec, ...]:
        """Every network the model runs: its network steps, then those its Python steps call."""
        found: dict[str, NetworkSpec] = {}
        for s in self.steps:
            for net in (s.network,) if isinstance(s, NetworkStep) else s.calls:
                found.setdefault(net.name, net)
        return tuple(found.values())

    def network(self, name: str) -> NetworkSpec:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(f"{self.name} has no network {name!r}")

    def step_max_batch(self, step: Step) -> int:
        if isinstance(step, NetworkStep):
            return step.network.max_batch_size
        return self.contract.max_batch_size if step.max_batch_size is None else step.max_batch_size

    def step_batching(self, step: Step) -> Batching:
        if isinstance(step, NetworkStep):
            return step.network.batching
        return step.batching or self.batching

    @property
    def served_cpu_instances(self) -> int:
        """Instances of the model's first Python model on the cpu target (the fused one if fused)."""
        return (self.fused_cpu_instances or self.cpu_instances) if self.fuse_on_cpu else self.cpu_instances

    def step_queue(self, step: Step) -> QueuePolicy:
        return step.network.queue if isinstance(step, NetworkStep) else self.queue

    def single_step(self) -> bool:
        """One step whose tensors are the contract's: served directly, no ensemble."""
        if len(self.steps) != 1:
            return False
        s = self.steps[0]
        return _signature(s.inputs) == _signature(self.contract.inputs) and _signature(
            s.outputs
        ) == _signature(self.contract.outputs)


def _find(tensors: tuple[TensorSpec, ...], name: str, owner: str) -> TensorSpec:
    for t in tensors:
        if t.name == name:
            return t
    raise KeyError(f"{owner} has no tensor {name!r}")


def _signature(tensors: tuple[TensorSpec, ...]) -> list[tuple[str, str, tuple[int, ...]]]:
    return sorted((t.name, t.dtype, t.dims) for t in tensors)


# --- wiring by tensor name -----------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """A step placed in an ensemble: step tensor name -> ensemble tensor name."""

    step: Step
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]


class WiringError(ValueError):
    """The steps of a served model cannot be connected by their tensor names."""


def _fits(producer: TensorSpec, consumer: TensorSpec, producer_batched: bool, consumer_batched: bool) -> bool:
    """Same dtype and compatible dims (a -1 on either side matches any size).

    Across a batching boundary (a model without a batch axis feeding one with it) the
    producer's first dim is the consumer's batch axis.
    """
    if producer.dtype != consumer.dtype:
        return False
    a, b = producer.dims, consumer.dims
    if not producer_batched and consumer_batched:
        a = a[1:]
    elif producer_batched and not consumer_batched:
        b = b[1:]
    return len(a) == len(b) and all(x == y or x < 0 or y < 0 for x, y in zip(a, b, strict=True))


def wire(model: ServedModel) -> list[Wire]:
    """Connect the steps by tensor name; raise WiringError naming the tensor that does not fit."""
    batched = model.contract.batched
    clash = {t.name for t in model.contract.inputs} & {t.name for t in model.contract.outputs}
    if clash and len(model.steps) > 1:
        raise WiringError(
            f"{model.name}: {sorted(clash)} is both an input and an output; a Triton ensemble has one "
            "tensor namespace, so name the output differently"
        )
    scope: dict[str, tuple[str, TensorSpec, bool]] = {
        t.name: (t.name, t, batched) for t in model.contract.inputs
    }
    wires: list[Wire] = []
    used: set[str] = set()
    producers: dict[str, tuple[int, str]] = {}  # ensemble tensor -> (wire index, step tensor)
    for i, step in enumerate(model.steps):
        bind = dict(step.bind) if isinstance(step, NetworkStep) else {}
        step_batched = model.step_max_batch(step) > 0
        inputs: dict[str, str] = {}
        for t in step.inputs:
            source = bind.get(t.name, t.name)
            if source not in scope:
                if t.optional:
                    continue
                raise WiringError(
                    f"{model.name}: step {step.name} needs {source!r}, which no earlier step makes"
                )
            ens, produced, p_batched = scope[source]
            if not _fits(produced, t, p_batched, step_batched):
                raise WiringError(
                    f"{model.name}: step {step.name} input {t.name!r} ({t.dtype} {list(t.dims)}) does not "
                    f"fit {source!r} ({produced.dtype} {list(produced.dims)})"
                )
            inputs[t.name] = ens
            used.add(ens)
        outputs: dict[str, str] = {}
        for t in step.outputs:
            ens = f"{step.name}.{t.name}"
            outputs[t.name] = ens
            scope[t.name] = (ens, t, step_batched)
            producers[ens] = (i, t.name)
        wires.append(Wire(step, inputs, outputs))
    for t in model.contract.inputs:
        if t.name not in used and not t.optional:
            raise WiringError(f"{model.name}: public input {t.name!r} is read by no step")
    renames: dict[str, str] = {}
    for t in model.contract.outputs:
        if t.name not in scope or scope[t.name][0] not in producers:
            raise WiringError(f"{model.name}: no step produces public output {t.name!r}")
        ens, produced, p_batched = scope[t.name]
        if not _fits(produced, t, p_batched, batched):
            raise WiringError(f"{model.name}: public output {t.name!r} does not fit its producer")
        renames[ens] = t.name
    # Keep only the outputs somebody reads (Triton rejects unused ensemble tensors).
    final: list[Wire] = []
    for w in wires:
        kept = {k: renames.get(v, v) for k, v in w.output_map.items() if v in used or v in renames}
        ins = {k: renames.get(v, v) for k, v in w.input_map.items()}
        final.append(Wire(w.step, ins, kept))
    return final


def step_index(models: list[ServedModel]) -> dict[str, Step]:
    """Every step of every model by name; a name shared by two models must mean the same step."""
    out: dict[str, Step] = {}
    for m in models:
        for s in m.steps:
            seen = out.get(s.name)
            # A network's bindings are per model (how it is fed); the network itself must agree.
            same = seen is None or (seen.network if isinstance(seen, NetworkStep) else seen) == (
                s.network if isinstance(s, NetworkStep) else s
            )
            if not same:
                raise ValueError(f"step {s.name!r} is declared differently by two models")
            out.setdefault(s.name, s)
    return out
