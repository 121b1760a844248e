"""Build a real TensorRT engine for the tiny generator and run the parity gate on it (GPU hosts only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomgen_client.specs import PRODUCT_GAN, TRYON
from export.onnx import export_network
from export.parity import OnnxRuntimeRunner, TensorRTRunner, run_gate
from export.tensorrt import (
    ENGINE_TARGETS,
    BuildOptions,
    build_and_gate,
    check_tensorrt_version,
    profile_shapes,
)

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("cuda_gpu")]
NET = PRODUCT_GAN.network


@pytest.fixture
def onnx_file(tiny_generator, tmp_path, torch_threads) -> Path:
    return export_network(tiny_generator, NET, tmp_path / "model.onnx")


def test_installed_tensorrt_is_the_containers(trt):
    check_tensorrt_version(trt.__version__)  # plans built with another version won't load in Triton


@pytest.mark.parametrize(
    "fp32",
    [{}, {"fp32_norm": True, "fp32_final_activation": True}],
    ids=["fp16", "fp16-with-fp32-norm"],
)
def test_engine_builds_passes_the_gate_and_is_installed(onnx_file, tmp_path, fp32, trt):
    out = tmp_path / "gpu" / NET.name / "1" / "model.plan"
    options = BuildOptions(timing_cache=tmp_path / "timing.cache", **fp32)
    # The version pin is tested on its own above; here any TensorRT 10 must build a correct engine.
    report = build_and_gate(PRODUCT_GAN, onnx_file, out, options, allow_version_mismatch=True)
    assert report.passed, str(report)
    assert out.stat().st_size > 0 and (tmp_path / "timing.cache").exists()

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(out.read_bytes())
    assert engine.num_optimization_profiles == 1
    for name, shapes in profile_shapes(NET).items():
        assert [tuple(s) for s in engine.get_tensor_profile_shape(name, 0)] == list(shapes)

    # Mixed-label batches of every size up to the profile max give the reference images.
    runner = TensorRTRunner(out, NET)
    assert run_gate(OnnxRuntimeRunner(onnx_file), runner, NET, batch_sizes=(3, 17, 64)).passed


@pytest.mark.parametrize("net", TRYON.networks, ids=lambda n: n.name)
def test_tryon_network_engines_pass_the_gate(net, tmp_path, trt, torch_threads):
    """Each try-on step (GridSample included in tryon_warp) builds and matches ONNX Runtime."""
    import torch

    from training.tryon import build, export_modules

    torch.manual_seed(0)
    pipe = build({"parser": 8, "warp": 8, "synthesis": 8}).eval()
    for head in pipe.warp.heads:
        torch.nn.init.normal_(head.weight, std=0.05)
    onnx_file = export_network(export_modules(pipe)[net.name], net, tmp_path / f"{net.name}.onnx")
    target = ENGINE_TARGETS[net.name]
    out = tmp_path / "gpu" / net.name / "1" / "model.plan"
    report = build_and_gate(
        target, onnx_file, out, BuildOptions(timing_cache=None), allow_version_mismatch=True
    )
    assert report.passed, str(report)
