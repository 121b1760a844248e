"""The per-host CPU runtime choice: measured, parity-gated, cached, and read back by the server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecomgen.serving import calibrate as C
from ecomgen.serving.runners import CHOICE_FILE, FALLBACK_RUNTIME, RUNTIME_ENV, resolve_runtime
from ecomgen.specs.product_gan import GENERATOR
from export.onnx import export_network


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from ecomgen.models.product_gan import tiny_networks

    return export_network(
        tiny_networks()["product_gan_generator"], GENERATOR, tmp_path_factory.mktemp("c") / "g.onnx"
    )


def test_calibration_measures_every_candidate_and_caches_the_choice(onnx_file, tmp_path):
    choice = C.calibrate(GENERATOR, onnx_file, tmp_path, threads=1, seconds=0.05)
    runtimes = [m.runtime for m in choice.measurements]
    assert runtimes[:2] == ["onnxruntime", "openvino-f32"]
    assert ("openvino-bf16" in runtimes) == C.has_bf16()
    chosen = next(m for m in choice.measurements if m.runtime == choice.runtime)
    assert chosen.passed and chosen.items_per_s == max(m.items_per_s for m in choice.measurements if m.passed)
    assert choice.machine and len(choice.onnx_sha256) == 64
    again = C.calibrate(GENERATOR, onnx_file, tmp_path, threads=1, seconds=0.05)
    assert again == choice  # read from the cache, not measured again
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_a_runtime_that_breaks_parity_is_never_chosen(onnx_file, tmp_path, monkeypatch):
    real = C._runner

    class Noisy:
        def __init__(self, inner):
            self.inner = inner

        def run(self, feeds):
            out = self.inner.run(feeds)
            return {
                k: v + np.random.default_rng(0).normal(0, 0.5, v.shape).astype(v.dtype)
                for k, v in out.items()
            }

    def runner(runtime, path, threads, batch):
        inner = real(runtime, path, threads, batch)
        return Noisy(inner) if runtime.startswith("openvino") else inner

    monkeypatch.setattr(C, "_runner", runner)
    choice = C.calibrate(GENERATOR, onnx_file, tmp_path, threads=1, seconds=0.05, refresh=True)
    assert choice.runtime == "onnxruntime"
    assert all(not m.passed for m in choice.measurements if m.runtime.startswith("openvino"))


def test_the_server_reads_the_choice_and_a_flag_overrides_it(onnx_file, tmp_path, monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    placed = tmp_path / "product_gan_generator.onnx"
    placed.write_bytes(onnx_file.read_bytes())
    assert resolve_runtime("auto", placed) == FALLBACK_RUNTIME
    choice = C.calibrate(GENERATOR, onnx_file, tmp_path / "cache", threads=1, seconds=0.05)
    written = C.write_choice(placed, choice)
    assert written.name == f"product_gan_generator.{CHOICE_FILE}"
    assert json.loads(written.read_text())["runtime"] == choice.runtime
    assert resolve_runtime("auto", placed) == choice.runtime
    assert resolve_runtime("onnxruntime", placed) == "onnxruntime"  # a spec pin wins
    monkeypatch.setenv(RUNTIME_ENV, "openvino-f32")  # ecomgen serve --cpu-runtime
    assert resolve_runtime("auto", placed) == "openvino-f32"
