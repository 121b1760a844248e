"""Build real TensorRT engines for every network of the registry and run the parity gate (GPU hosts).

Tiny random-weight networks (the model modules' ``tiny_networks``), so the test is about the
builder, the profiles and the gate, not about the trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecomgen.registry import REGISTRY
from ecomgen.spec import NetworkSpec, ServedModel
from export.onnx import export_network, tiny_modules
from export.parity import OnnxRuntimeRunner, run_gate
from export.tensorrt import BuildOptions, build_and_gate, check_tensorrt_version, profile_shapes
from export.trt_runtime import TensorRTRunner

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("cuda_gpu")]

NETWORKS: dict[str, tuple[ServedModel, NetworkSpec]] = REGISTRY.networks()


def test_installed_tensorrt_is_the_containers(trt: Any) -> None:
    check_tensorrt_version(trt.__version__)  # plans built with another version won't load in Triton


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_engine_builds_passes_the_gate_and_keeps_its_profile(name: str, tmp_path: Path, trt: Any) -> None:
    model, net = NETWORKS[name]
    onnx_file = export_network(tiny_modules(model)[name], net, tmp_path / f"{name}.onnx")
    out = tmp_path / "gpu" / name / "1" / "model.plan"
    options = BuildOptions(timing_cache=tmp_path / "timing.cache")
    # The version pin is tested on its own above; here any TensorRT 10 must build a correct engine.
    report = build_and_gate(net, onnx_file, out, options, allow_version_mismatch=True)
    assert report.passed, str(report)
    assert out.stat().st_size > 0

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(out.read_bytes())
    assert engine.num_optimization_profiles == 1
    for tensor, shapes in profile_shapes(net).items():
        assert [tuple(s) for s in engine.get_tensor_profile_shape(tensor, 0)] == list(shapes)
    # The plan on disk (not just the builder's bytes) gives the reference outputs.
    assert run_gate(OnnxRuntimeRunner(onnx_file), TensorRTRunner(out, net), net).passed
