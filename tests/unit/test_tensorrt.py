"""TensorRT engine builder, without TensorRT: spec-derived profile, trtexec line, config invariants,
the clean failure when TensorRT is missing, and the builder's logic against a stand-in ``tensorrt``."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import export.parity
import export.trt_runtime
from ecomgen.specs.product_gan import GENERATOR
from export import tensorrt as T
from export.onnx import export_network
from export.repository import DEFAULT_ROOT

NET = GENERATOR
# Every engine the gpu repository needs: product_gan's generator and each try-on network.
ALL_NETWORKS = pytest.mark.parametrize("net", list(T.ENGINE_TARGETS.values()), ids=list(T.ENGINE_TARGETS))


@pytest.fixture
def onnx_file(tiny_generator, tmp_path, torch_threads) -> Path:
    return export_network(tiny_generator, NET, tmp_path / "model.onnx")


# --- spec-derived profile and config invariants -------------------------------------------


@ALL_NETWORKS
def test_profile_covers_every_input_on_the_batch_axis(net):
    shapes = T.profile_shapes(net)
    assert list(shapes) == [t.name for t in net.inputs]
    for t in net.inputs:
        lo, opt, hi = shapes[t.name]
        assert (lo[0], opt[0], hi[0]) == (net.profile.min_batch, net.profile.opt_batch, net.profile.max_batch)
        if not t.variable:
            assert lo[1:] == opt[1:] == hi[1:] == t.dims
        assert len(lo) == len(t.dims) + 1
        assert hi[0] == net.max_batch_size


def test_product_gan_profile_is_the_exported_networks_input_shapes(onnx_file):
    """The generator's profile: per row, the ONNX file's own input shapes (read from the network the
    export traced, not from the spec the profile is built from), at the spec's batch range, which
    starts at one request and ends at the served max_batch_size."""
    graph = onnx.load(str(onnx_file)).graph
    rows = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:]) for i in graph.input}
    assert all(all(row) for row in rows.values()), f"the exported inputs have fixed row shapes: {rows}"
    p = NET.profile
    assert (p.min_batch, p.max_batch) == (1, NET.max_batch_size) and p.min_batch <= p.opt_batch <= p.max_batch
    assert T.profile_shapes(NET) == {
        name: ((p.min_batch, *row), (p.opt_batch, *row), (p.max_batch, *row)) for name, row in rows.items()
    }


@ALL_NETWORKS
def test_engine_config_matches_the_profile(net):
    generated = T.engine_config(net)
    committed = text_format.Parse(
        (DEFAULT_ROOT / "gpu" / net.name / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    for cfg in (generated, committed):
        assert cfg.platform == "tensorrt_plan"
        assert cfg.max_batch_size == net.profile.max_batch
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        assert [i.name for i in cfg.input] == list(T.profile_shapes(net))
        assert [o.name for o in cfg.output] == [t.name for t in net.outputs]
    T.check_profile_matches_config(net)
    assert T.engine_path(net) == DEFAULT_ROOT / "gpu" / net.name / "1" / "model.plan"


def test_a_profile_config_mismatch_is_refused(monkeypatch):
    cfg = mc.ModelConfig()
    cfg.CopyFrom(T.engine_config(NET))
    cfg.max_batch_size = 32
    monkeypatch.setattr(T, "engine_config", lambda net: cfg)
    with pytest.raises(T.EngineBuildError, match="profile max batch 64 != config max_batch_size 32"):
        T.check_profile_matches_config(NET)


def test_only_the_containers_tensorrt_builds_plans():
    T.check_tensorrt_version(T.TENSORRT_VERSION)
    T.check_tensorrt_version(T.TENSORRT_VERSION + ".18")
    with pytest.raises(T.EngineBuildError, match="fail to deserialize"):
        T.check_tensorrt_version("10.6.0.26")
    T.check_tensorrt_version("10.6.0.26", allow_mismatch=True)


# --- the trtexec line -------------------------------------------------------------------------


def test_trtexec_command_exact_flags():
    repo = T.REPO_ROOT
    cmd = T.trtexec_command(
        NET,
        repo / "build/onnx/product_gan_generator.onnx",
        repo / "build/tensorrt/product_gan_generator.plan",
        T.BuildOptions(workspace_gib=2, timing_cache=repo / "build/tensorrt/timing.cache"),
    )
    assert cmd == [
        "trtexec",
        "--onnx=build/onnx/product_gan_generator.onnx",
        "--saveEngine=build/tensorrt/product_gan_generator.plan",
        "--fp16",
        "--minShapes=z:1x128,class_onehot:1x10",
        "--optShapes=z:32x128,class_onehot:32x10",
        "--maxShapes=z:64x128,class_onehot:64x10",
        "--memPoolSize=workspace:2048M",
        "--timingCacheFile=build/tensorrt/timing.cache",
        "--skipInference",
    ]


@ALL_NETWORKS
def test_trtexec_shapes_cover_every_input(net):
    cmd = T.trtexec_command(net, Path("/x/m.onnx"), Path("/x/m.plan"), T.BuildOptions(timing_cache=None))
    flags = dict(arg.split("=", 1) for arg in cmd[1:] if "=" in arg)
    for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        want = ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in T.profile_shapes(net).items())
        assert flags[flag] == want
    assert "--timingCacheFile" not in flags and flags["--onnx"] == "/x/m.onnx"


def test_fp32_layers_come_from_onnx_node_names(onnx_file):
    model = onnx.load(str(onnx_file))
    opts = T.BuildOptions(fp32_norm=True, fp32_final_activation=True)
    nodes = T.fp32_onnx_nodes(model, NET, opts)
    assert nodes == [f"/blocks.{i}/norm/bn/BatchNormalization" for i in range(4)] + [
        "/final_norm/BatchNormalization",
        "/Tanh",
    ]
    # Spec substrings select by name; Constant nodes are weights, not layers.
    net = replace(NET, fp32_layers=("to_rgb", "blocks.0/norm"))
    by_name = T.fp32_onnx_nodes(model, net, T.BuildOptions())
    assert "/to_rgb/Conv" in by_name and "/blocks.0/norm/gamma/MatMul" in by_name
    assert not any("Constant" in n for n in by_name)
    cmd = T.trtexec_command(NET, onnx_file, onnx_file.with_suffix(".plan"), opts, nodes)
    assert "--precisionConstraints=obey" in cmd
    assert "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in nodes) in cmd
    assert "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in nodes) in cmd


def test_fp32_engine_line_has_no_precision_flags():
    opts = T.BuildOptions(fp16=False)
    cmd = T.trtexec_command(NET, Path("m.onnx"), Path("m.plan"), opts, ["/Tanh"])
    assert not any(a.startswith(("--fp16", "--precisionConstraints", "--layerPrecisions")) for a in cmd)


def test_print_trtexec_cli(onnx_file, capsys):
    argv = ["--print-trtexec", "--onnx", str(onnx_file), "--fp32-norm", "--save-engine", "/tmp/e.plan"]
    assert T.main(argv) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[0] == "trtexec" and "--saveEngine=/tmp/e.plan" in printed
    assert (
        "--layerPrecisions="
        + ",".join(
            [f"/blocks.{i}/norm/bn/BatchNormalization:fp32" for i in range(4)]
            + ["/final_norm/BatchNormalization:fp32"]
        )
        in printed
    )


def test_print_trtexec_for_every_tryon_network(capsys):
    assert T.main(["--model", "tryon", "--print-trtexec"]) == 0
    lines = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert [next(a for a in line if a.startswith("--saveEngine=")) for line in lines] == [
        f"--saveEngine=build/tensorrt/{name}.plan"
        for name in ("tryon_parser", "tryon_layout", "tryon_warp", "tryon_synthesis")
    ]
    warp = next(line for line in lines if "tryon_warp" in " ".join(line))
    assert (
        "--minShapes=garment:1x3x256x192,garment_mask:1x1x256x192,person:1x3x256x192,parse:1x5x256x192,"
        "layout:1x3x256x192" in warp
    )


# --- without TensorRT -----------------------------------------------------------------------


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError


def test_module_imports_without_tensorrt_and_explains_what_to_do(no_tensorrt):
    import importlib

    importlib.reload(T)
    with pytest.raises(T.TensorRTUnavailable) as err:
        T.import_tensorrt()
    msg = str(err.value)
    assert f"tensorrt-cu12=={T.TENSORRT_VERSION}" in msg and "--print-trtexec" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_cli_fails_cleanly_without_tensorrt(no_tensorrt, onnx_file, tmp_path, capsys):
    out = tmp_path / "model.plan"
    assert T.main(["--onnx", str(onnx_file), "--out", str(out), "--no-timing-cache"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: product_gan_generator: TensorRT is not available")
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_reports_a_missing_onnx_file(tmp_path, capsys):
    assert T.main(["--onnx", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "m.plan")]) == 2
    assert "export.onnx" in capsys.readouterr().err


# --- the builder against a stand-in TensorRT --------------------------------------------------


class _Obj:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


def fake_tensorrt(parse_errors: tuple[str, ...] = ()) -> types.ModuleType:
    """Just enough of the TensorRT 10 Python API for EngineBuilder; the "parser" turns each
    non-Constant ONNX node into a layer named after it, as TensorRT's ONNX parser does."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = T.TENSORRT_VERSION
    trt.float32, trt.float16, trt.int64 = "float32", "float16", "int64"
    trt.LayerType = _Obj(NORMALIZATION="NORM", SCALE="SCALE", ACTIVATION="ACT", OTHER="OTHER")
    trt.BuilderFlag = _Obj(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.MemoryPoolType = _Obj(WORKSPACE="WORKSPACE")
    levels = {"INFO": 1, "VERBOSE": 0, "WARNING": 2}
    trt.Logger = type("Logger", (), {**levels, "__init__": lambda self, level: None})
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    kinds = {"BatchNormalization": "SCALE", "Tanh": "ACT", "Relu": "ACT"}

    class Layer:
        def __init__(self, name: str, kind: str, outputs: list[Any]):
            self.name, self.type, self.outputs = name, kind, outputs
            self.precision, self.output_types = None, {}

        num_outputs = property(lambda self: len(self.outputs))

        def get_output(self, i: int) -> Any:
            return self.outputs[i]

        def set_output_type(self, i: int, dtype: str) -> None:
            self.output_types[i] = dtype

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Any] = []
            self.outputs: list[Any] = []
            self.layers: list[Layer] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

        def get_output(self, i: int) -> Any:
            return self.outputs[i]

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any):
            self.network, self.num_errors = network, 0

        def get_error(self, i: int) -> str:
            return parse_errors[i]

        def parse_from_file(self, path: str) -> bool:
            if parse_errors:
                self.num_errors = len(parse_errors)
                return False
            g = onnx.load(path).graph
            outs = {o.name for o in g.output}
            for i in g.input:
                dims = [d.dim_value or -1 for d in i.type.tensor_type.shape.dim]
                self.network.inputs.append(_Obj(name=i.name, shape=dims, dtype="float32"))
            for node in g.node:
                if node.op_type == "Constant":
                    continue
                tensors = [_Obj(name=o, dtype="float32", is_network_output=o in outs) for o in node.output]
                self.network.layers.append(Layer(node.name, kinds.get(node.op_type, "OTHER"), tensors))
                self.network.outputs += [t for t in tensors if t.is_network_output]
            return True

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.profiles: list[Any] = []
            self.cache: Any = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.pools[pool] = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> Any:
            return _Obj(serialize=lambda: data + b"+timed")

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self.cache

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[Any, ...]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger: Any):
            pass

        create_builder_config = staticmethod(Config)
        create_optimization_profile = staticmethod(Profile)

        def create_network(self, flags: int) -> Network:
            return Network()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            return b"PLAN"

    trt.OnnxParser, trt.Builder = OnnxParser, Builder
    return trt


def test_builder_sets_profile_fp16_workspace_cache_and_fp32_layers(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    opts = T.BuildOptions(workspace_gib=1.5, timing_cache=cache, fp32_norm=True, fp32_final_activation=True)
    b = T.EngineBuilder(NET, opts)
    b.create_network(onnx_file)
    assert b.create_engine() == b"PLAN"
    assert b.config.pools == {"WORKSPACE": int(1.5 * 2**30)}
    assert b.config.flags == {"FP16", "OBEY"}
    [profile] = b.config.profiles
    assert profile.shapes == T.profile_shapes(NET)
    fp32 = {layer.name for layer in b.network.layers if layer.precision == "float32"}
    assert fp32 == {f"/blocks.{i}/norm/bn/BatchNormalization" for i in range(4)} | {
        "/final_norm/BatchNormalization",
        "/Tanh",
    }
    assert all(layer.output_types == {0: "float32"} for layer in b.network.layers if layer.name in fp32)
    assert cache.read_bytes() == b"old+timed", "the timing cache is loaded, then saved"


def test_builder_without_fp32_layers_does_not_constrain_precision(monkeypatch, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    b = T.EngineBuilder(NET, T.BuildOptions(timing_cache=None))
    b.create_network(onnx_file)
    b.create_engine()
    assert b.config.flags == {"FP16"}
    assert all(layer.precision is None for layer in b.network.layers)


def test_builder_logs_every_parser_error(monkeypatch, onnx_file, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(("node /a: bad op", "node /b: bad shape")))
    b = T.EngineBuilder(NET, T.BuildOptions(timing_cache=None))
    caplog.set_level(logging.ERROR, "export.tensorrt")
    with pytest.raises(T.EngineBuildError, match="2 error"):
        b.create_network(onnx_file)
    assert [r.getMessage() for r in caplog.records] == [
        "ONNX parser: node /a: bad op",
        "ONNX parser: node /b: bad shape",
    ]


def test_builder_refuses_another_tensorrt_version(monkeypatch):
    trt = fake_tensorrt()
    trt.__version__ = "10.8.0.43"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(T.EngineBuildError, match=r"10\.8\.0\.43"):
        T.EngineBuilder(NET, T.BuildOptions())


class _ReplayRunner:
    """Stands in for TensorRTRunner: replays ONNX Runtime, optionally corrupted."""

    corrupt = False
    onnx: Path

    def __init__(self, engine: bytes, net: Any, name: str = "tensorrt"):
        assert engine == b"PLAN"
        self.name = name
        self.ort = export.parity.OnnxRuntimeRunner(self.onnx)

    def __call__(self, feeds: Any) -> dict[str, np.ndarray]:
        out = dict(self.ort(feeds))
        if self.corrupt:
            out["image"] = np.full_like(out["image"], np.nan)
        return out


@pytest.mark.parametrize("corrupt", [False, True], ids=["gate-passes", "gate-fails"])
def test_plan_is_written_only_when_the_gate_passes(monkeypatch, onnx_file, tmp_path, corrupt):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    runner = type("Runner", (_ReplayRunner,), {"corrupt": corrupt, "onnx": onnx_file})
    monkeypatch.setattr(export.trt_runtime, "TensorRTRunner", runner)
    monkeypatch.setattr(export.parity, "default_batch_sizes", lambda net: (1, 3))
    out = tmp_path / "gpu" / "model.plan"
    report = T.build_and_gate(NET, onnx_file, out, T.BuildOptions(timing_cache=None))
    assert report.passed is not corrupt
    assert out.exists() is not corrupt
    if corrupt:
        assert report.failed_outputs == ("image",)
    else:
        assert out.read_bytes() == b"PLAN"
        stamp = json.loads(T.stamp_path(out).read_text())
        assert stamp["passed"] and stamp["sha256"] == hashlib.sha256(b"PLAN").hexdigest()
        assert stamp["network"] == NET.name
    assert not out.with_name("model.plan.tmp").exists()
    assert T.stamp_path(out).exists() is not corrupt
