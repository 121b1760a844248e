"""Build the TensorRT FP16 engine of a model's network, gated on image parity.

Follows the structure of TensorRT's own Python samples (an ``EngineBuilder`` with
``create_network`` and ``create_engine``). Everything comes from the spec: tensor
names, the optimisation profile (min/opt/max batch), the layers kept in FP32. The
engine is written to ``model_repository/gpu/<network>/1/model.plan`` only after
the parity gate (export/parity.py) passes against ONNX Runtime FP32.

A plan only loads in the TensorRT version that built it, so it must be built with
the TensorRT of the Triton container the gpu configs were written for
(``TRITON_CONTAINER`` below), on the GPU model it will be served on.

    python -m export.tensorrt --model product_gan                 # build, gate, install
    python -m export.tensorrt --model product_gan --print-trtexec # the same build as a trtexec line

TensorRT is imported lazily, so this module (and ``--print-trtexec``) works on a
machine without it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import model_config_pb2 as mc

from ecomgen.hostinfo import machine_description
from ecomgen.registry import REGISTRY
from ecomgen.spec import NetworkSpec
from export.onnx import onnx_path
from export.repository import DEFAULT_ROOT, repository_models
from export.trt_runtime import (
    TENSORRT_VERSION,
    TRITON_CONTAINER,
    TensorRTUnavailable,
    import_tensorrt,
)
from training.paths import BUILD_DIR, REPO_ROOT

if TYPE_CHECKING:
    import onnx

    from export.parity import GateReport

log = logging.getLogger("export.tensorrt")

DEFAULT_WORKSPACE_GIB = 4.0
ENGINE_DIR = BUILD_DIR / "tensorrt"
DEFAULT_TIMING_CACHE = ENGINE_DIR / "timing.cache"
# ONNX ops kept in FP32 by --fp32-norm: their variance/mean terms are where fp16 overflows.
NORM_OPS = frozenset(
    {"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"}
)
FINAL_ACTIVATION_OPS = frozenset({"Tanh", "Sigmoid", "Relu", "LeakyRelu", "Softmax", "Clip", "HardSigmoid"})


class EngineBuildError(RuntimeError):
    """Parsing, building or checking the engine failed; the message says why."""


def check_tensorrt_version(version: str, allow_mismatch: bool = False) -> None:
    """Refuse to build a plan that the target Triton container could not load."""
    if version.split(".")[:3] == TENSORRT_VERSION.split("."):
        return
    msg = (
        f"TensorRT {version} here, but {TRITON_CONTAINER} runs TensorRT {TENSORRT_VERSION}: "
        "its plans would fail to deserialize there"
    )
    if not allow_mismatch:
        raise EngineBuildError(msg + " (pass --allow-version-mismatch for a local experiment)")
    log.warning("%s; continuing because --allow-version-mismatch was given", msg)


# --- everything derived from the spec (no TensorRT needed) ------------------------------


Shape = tuple[int, ...]


def profile_shapes(net: NetworkSpec) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Input name -> (min, opt, max) shape; every input is dynamic on the batch axis."""
    return {t.name: net.profile.shapes(t) for t in net.inputs}


# --model choices: every network of every registered model (and the models themselves).
ENGINE_TARGETS: dict[str, NetworkSpec] = {name: net for name, (_, net) in REGISTRY.networks().items()}


def engine_path(net: NetworkSpec, repository: Path = DEFAULT_ROOT) -> Path:
    """Where Triton's gpu repository expects the plan (default_model_filename: model.plan)."""
    return repository / "gpu" / net.name / "1" / "model.plan"


def engine_config(net: NetworkSpec) -> mc.ModelConfig:
    """The generated ``config.pbtxt`` of the engine's model in the gpu repository."""
    for model in repository_models("gpu"):
        if model.name == net.name:
            return model.config
    raise KeyError(f"the gpu repository has no model {net.name!r}")


def check_profile_matches_config(net: NetworkSpec) -> None:
    """Triton rejects a plan whose profile cannot serve the config's max_batch_size."""
    config = engine_config(net)
    if config.platform != "tensorrt_plan":
        raise EngineBuildError(f"{config.name}: platform {config.platform!r}, expected 'tensorrt_plan'")
    if net.profile.max_batch != config.max_batch_size:
        raise EngineBuildError(
            f"{config.name}: profile max batch {net.profile.max_batch} != config max_batch_size "
            f"{config.max_batch_size}"
        )
    if [i.name for i in config.input] != [t.name for t in net.inputs]:
        raise EngineBuildError(f"{config.name}: config inputs differ from the network spec")


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = True
    workspace_gib: float = DEFAULT_WORKSPACE_GIB
    timing_cache: Path | None = DEFAULT_TIMING_CACHE
    fp32_norm: bool = False  # keep normalisation layers in FP32
    fp32_final_activation: bool = False  # keep the activation producing a network output in FP32
    extra_fp32_layers: tuple[str, ...] = field(default=())  # name substrings, added to the spec's

    def fp32_substrings(self, net: NetworkSpec) -> tuple[str, ...]:
        return (*net.fp32_layers, *self.extra_fp32_layers)

    def wants_fp32_layers(self, net: NetworkSpec) -> bool:
        return self.fp16 and bool(self.fp32_substrings(net) or self.fp32_norm or self.fp32_final_activation)


def fp32_onnx_nodes(model: onnx.ModelProto, net: NetworkSpec, options: BuildOptions) -> list[str]:
    """ONNX node names to keep in FP32 (TensorRT's ONNX parser names each node's layer after it).

    Constant nodes are skipped: the parser folds them into weights, they are not layers.
    """
    substrings = options.fp32_substrings(net)
    graph_outputs = {o.name for o in model.graph.output}
    names = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        if (
            any(s in node.name for s in substrings)
            or (options.fp32_norm and node.op_type in NORM_OPS)
            or (
                options.fp32_final_activation
                and node.op_type in FINAL_ACTIVATION_OPS
                and graph_outputs.intersection(node.output)
            )
        ):
            if not node.name:
                raise EngineBuildError(f"an unnamed {node.op_type} node matched; export with node names")
            names.append(node.name)
    return names


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _shown(path: Path) -> str:
    """Repo-relative when possible, so the line also works with the repo mounted in a container."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def trtexec_command(
    net: NetworkSpec,
    onnx_file: Path,
    save_engine: Path,
    options: BuildOptions = BuildOptions(),
    fp32_layers: Sequence[str] = (),
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec argv equivalent to ``EngineBuilder`` with ``options``.

    ``fp32_layers`` are exact layer names (trtexec has no substring match): pass
    ``fp32_onnx_nodes(...)`` of the same ONNX file.
    """
    shapes = profile_shapes(net)
    cmd = [trtexec, f"--onnx={_shown(onnx_file)}", f"--saveEngine={_shown(save_engine)}"]
    if options.fp16:
        cmd.append("--fp16")
    for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        cmd.append(f"{flag}=" + ",".join(f"{name}:{_dims(s[i])}" for name, s in shapes.items()))
    cmd.append(f"--memPoolSize=workspace:{round(options.workspace_gib * 1024)}M")
    if options.timing_cache is not None:
        cmd.append(f"--timingCacheFile={_shown(options.timing_cache)}")
    if options.fp16 and fp32_layers:
        bad = [n for n in fp32_layers if any(c in n for c in ",:*")]
        if bad:
            raise EngineBuildError(f"layer names {bad} cannot be written in a trtexec layer spec")
        cmd += [
            "--precisionConstraints=obey",
            "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers),
            "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in fp32_layers),
        ]
    cmd.append("--skipInference")  # build only; the parity gate is the check
    return cmd


# --- the builder (TensorRT from here on) ------------------------------------------------


class EngineBuilder:
    """Parses the ONNX file into a TensorRT network and builds a serialized engine."""

    def __init__(
        self,
        net: NetworkSpec,
        options: BuildOptions,
        verbose: bool = False,
        allow_version_mismatch: bool = False,
    ):
        trt = import_tensorrt()
        check_tensorrt_version(trt.__version__, allow_version_mismatch)
        self.trt, self.net, self.options = trt, net, options
        self.trt_logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.INFO)
        trt.init_libnvinfer_plugins(self.trt_logger, namespace="")
        self.builder = trt.Builder(self.trt_logger)
        self.config = self.builder.create_builder_config()
        self.config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30))
        )
        self.network: Any = None
        self.parser: Any = None
        self.fp32_nodes: list[str] = []

    def create_network(self, onnx_file: Path) -> None:
        """Parse ONNX (logging every parser error), check names against the spec, add the profile."""
        trt = self.trt
        self.network = self.builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        self.parser = trt.OnnxParser(self.network, self.trt_logger)
        if not self.parser.parse_from_file(str(onnx_file)):
            errors = [str(self.parser.get_error(i)) for i in range(self.parser.num_errors)]
            for err in errors:
                log.error("ONNX parser: %s", err)
            raise EngineBuildError(
                f"TensorRT could not parse {onnx_file}: {len(errors)} error(s), first: "
                f"{errors[0] if errors else 'none reported'}"
            )
        inputs = [self.network.get_input(i) for i in range(self.network.num_inputs)]
        outputs = [self.network.get_output(i) for i in range(self.network.num_outputs)]
        want_in, want_out = [t.name for t in self.net.inputs], [t.name for t in self.net.outputs]
        if sorted(t.name for t in inputs) != sorted(want_in) or sorted(t.name for t in outputs) != sorted(
            want_out
        ):
            raise EngineBuildError(
                f"{onnx_file}: inputs {[t.name for t in inputs]} / outputs {[t.name for t in outputs]}, "
                f"spec wants {want_in} / {want_out}"
            )
        for t in inputs:
            log.info("input %s %s %s", t.name, tuple(t.shape), t.dtype)
            if t.shape[0] != -1:
                raise EngineBuildError(f"input {t.name} has a static batch axis {tuple(t.shape)}")
        if self.options.wants_fp32_layers(self.net):
            import onnx

            self.fp32_nodes = fp32_onnx_nodes(onnx.load(str(onnx_file)), self.net, self.options)
        self._add_profile()

    def _add_profile(self) -> None:
        """One profile holding min/opt/max for every dynamic input (TensorRT needs all in one)."""
        profile = self.builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes(self.net).items():
            profile.set_shape(name, lo, opt, hi)
            log.info("profile %s: min %s opt %s max %s", name, lo, opt, hi)
        if self.config.add_optimization_profile(profile) < 0:
            raise EngineBuildError("TensorRT rejected the optimisation profile")

    def _fp32_reason(self, layer: Any) -> str | None:
        trt, name = self.trt, layer.name
        if any(s in name for s in self.options.fp32_substrings(self.net)):
            return "spec fp32_layers"
        if any(name == n or name.startswith(n) for n in self.fp32_nodes):
            return "selected ONNX node"
        if self.options.fp32_norm and layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SCALE):
            return "normalisation"
        if (
            self.options.fp32_final_activation
            and layer.type == trt.LayerType.ACTIVATION
            and any(layer.get_output(i).is_network_output for i in range(layer.num_outputs))
        ):
            return "final activation"
        return None

    def _apply_precision_constraints(self) -> list[str]:
        trt = self.trt
        kept = []
        for i in range(self.network.num_layers):
            layer = self.network.get_layer(i)
            floating = [
                layer.get_output(j).dtype in (trt.float32, trt.float16) for j in range(layer.num_outputs)
            ]
            reason = self._fp32_reason(layer)
            if reason is None or not any(floating):
                continue
            layer.precision = trt.float32
            for j, is_float in enumerate(floating):
                if is_float:
                    layer.set_output_type(j, trt.float32)
            kept.append(layer.name)
            log.info("FP32 layer (%s): %s", reason, layer.name)
        if not kept:
            log.warning("FP32 layers were requested but no layer matched; the engine is plain FP16")
        # OBEY: fail the build rather than silently run these layers in FP16.
        self.config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        return kept

    def _load_timing_cache(self) -> None:
        path = self.options.timing_cache
        if path is None:
            return
        cache = self.config.create_timing_cache(path.read_bytes() if path.exists() else b"")
        if not self.config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("%s was made by another TensorRT/GPU; starting a fresh timing cache", path)
            self.config.set_timing_cache(self.config.create_timing_cache(b""), ignore_mismatch=False)

    def _save_timing_cache(self) -> None:
        path = self.options.timing_cache
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(memoryview(self.config.get_timing_cache().serialize())))
        log.info("timing cache saved to %s", path)

    def create_engine(self) -> bytes:
        """Build and return the serialized engine (nothing is written but the timing cache)."""
        if self.network is None:
            raise EngineBuildError("call create_network first")
        trt = self.trt
        if self.options.fp16:
            self.config.set_flag(trt.BuilderFlag.FP16)
            if self.options.wants_fp32_layers(self.net):
                self._apply_precision_constraints()
        self._load_timing_cache()
        serialized = self.builder.build_serialized_network(self.network, self.config)
        if serialized is None:
            raise EngineBuildError("TensorRT failed to build the engine; see its log above")
        self._save_timing_cache()
        return bytes(memoryview(serialized))


def build_and_gate(
    net: NetworkSpec,
    onnx_file: Path,
    out: Path,
    options: BuildOptions = BuildOptions(),
    verbose: bool = False,
    allow_version_mismatch: bool = False,
) -> GateReport:
    """Build the engine, run the parity gate, and write ``out`` only if the gate passes."""
    from export.parity import OnnxRuntimeRunner, run_gate
    from export.trt_runtime import TensorRTRunner

    check_profile_matches_config(net)
    if not onnx_file.exists():
        raise EngineBuildError(f"{onnx_file} not found: run `python -m export.onnx` first")
    builder = EngineBuilder(net, options, verbose, allow_version_mismatch)
    builder.create_network(onnx_file)
    engine = builder.create_engine()
    report = run_gate(OnnxRuntimeRunner(onnx_file), TensorRTRunner(engine, net), net)
    if report.passed:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(engine)
        os.replace(tmp, out)  # Triton polling the repository never sees a half-written plan
        write_stamp(out, engine, report, tensorrt_version(builder))
        log.info("wrote %s (%.1f MiB)", out, len(engine) / 2**20)
    else:
        log.error("parity gate failed; %s was not written", out)
    return report


def stamp_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".parity.json")


def tensorrt_version(builder: EngineBuilder) -> str:
    return str(getattr(builder.trt, "__version__", TENSORRT_VERSION))


def write_stamp(plan: Path, engine: bytes, report: GateReport, trt_version: str) -> Path:
    """``model.plan.parity.json``: proof that exactly these bytes passed the gate.

    The Kubernetes GPU overlay's init container refuses to start Triton on a plan whose
    sha256 does not match a passed stamp (deploy/).
    """
    stamp = {
        "sha256": hashlib.sha256(engine).hexdigest(),
        "passed": report.passed,
        "tensorrt": trt_version,
        "gpu": _gpu_name(),
        "network": report.network,
        "report": str(report),
        "built_on": machine_description(),
    }
    path = stamp_path(plan)
    path.write_text(json.dumps(stamp, indent=2) + "\n")
    return path


def _gpu_name() -> str:
    try:
        from export.trt_runtime import _cuda_check, _cudart

        props = _cuda_check(_cudart().cudaGetDeviceProperties(0))
        name = props.name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no GPU query available: the stamp still carries the hash
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        choices=sorted({*ENGINE_TARGETS, *REGISTRY.names()}),
        default="product_gan",
        help="a network, or a model: a model name builds each of its networks",
    )
    p.add_argument("--onnx", type=Path, default=None, help="default: build/onnx/<network>.onnx")
    p.add_argument(
        "--out", type=Path, default=None, help="default: model_repository/gpu/<network>/1/model.plan"
    )
    p.add_argument("--workspace-gib", type=float, default=DEFAULT_WORKSPACE_GIB)
    p.add_argument("--timing-cache", type=Path, default=DEFAULT_TIMING_CACHE)
    p.add_argument("--no-timing-cache", action="store_true")
    p.add_argument("--fp32", action="store_true", help="build a plain FP32 engine (no FP16 flag)")
    p.add_argument("--fp32-norm", action="store_true", help="keep normalisation layers in FP32")
    p.add_argument("--fp32-final-activation", action="store_true", help="keep the output activation in FP32")
    p.add_argument(
        "--keep-fp32",
        action="append",
        default=[],
        metavar="SUBSTR",
        help="more layer-name substrings in FP32",
    )
    p.add_argument("--print-trtexec", action="store_true", help="print the equivalent trtexec line and exit")
    p.add_argument("--trtexec", default="trtexec", help="trtexec binary for --print-trtexec")
    p.add_argument(
        "--save-engine",
        type=Path,
        default=None,
        help="--saveEngine of the trtexec line (default: build/tensorrt/<network>.plan, to gate first)",
    )
    p.add_argument("--allow-version-mismatch", action="store_true")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    options = BuildOptions(
        fp16=not opt.fp32,
        workspace_gib=opt.workspace_gib,
        timing_cache=None if opt.no_timing_cache else opt.timing_cache,
        fp32_norm=opt.fp32_norm,
        fp32_final_activation=opt.fp32_final_activation,
        extra_fp32_layers=tuple(opt.keep_fp32),
    )
    if opt.model in ENGINE_TARGETS:
        names = [opt.model]
    else:
        names = [net.name for net in REGISTRY[opt.model].networks]
        if len(names) > 1 and (opt.onnx or opt.out or opt.save_engine):
            p.error("--onnx/--out/--save-engine name one file: pass a single network, e.g. tryon_warp")
    code = 0
    for name in names:
        code = max(code, _build_one(ENGINE_TARGETS[name], opt, options))
    return code


def _build_one(net: NetworkSpec, opt: argparse.Namespace, options: BuildOptions) -> int:
    onnx_file = opt.onnx or onnx_path(net)
    try:
        check_profile_matches_config(net)
        if opt.print_trtexec:
            layers: list[str] = []
            if options.wants_fp32_layers(net):
                if not onnx_file.exists():
                    raise EngineBuildError(
                        f"{onnx_file} not found: FP32 layer names are read from the ONNX file"
                    )
                import onnx

                layers = fp32_onnx_nodes(onnx.load(str(onnx_file)), net, options)
            save = opt.save_engine or ENGINE_DIR / f"{net.name}.plan"
            print(shlex.join(trtexec_command(net, onnx_file, save, options, layers, opt.trtexec)))
            return 0
        report = build_and_gate(
            net, onnx_file, opt.out or engine_path(net), options, opt.verbose, opt.allow_version_mismatch
        )
    except (TensorRTUnavailable, EngineBuildError) as e:
        print(f"error: {net.name}: {e}", file=sys.stderr)
        return 2
    print(f"{net.name}: {report}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
