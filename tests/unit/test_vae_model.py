"""personalize's encoder and decoder: shapes, batch independence, checkpoint I/O, ONNX and CPU runtimes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ecomgen.models import vae as vae_mod
from ecomgen.models.vae import LOGVAR_RANGE, VAE, load_networks, load_vae, save_vae, tiny_networks

SIGNATURES = {
    "personalize_encoder": (["image"], ["mu", "logvar"]),
    "personalize_decoder": (["z"], ["image"]),
}


def example_input(name: str, batch: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "personalize_encoder":
        return rng.uniform(-1, 1, (batch, 3, 64, 48)).astype(np.float32)
    return rng.standard_normal((batch, latent_dim)).astype(np.float32)


def as_list(out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    return [out.numpy()] if isinstance(out, torch.Tensor) else [o.numpy() for o in out]


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    return tiny_networks(seed=0)


def latent_dim(nets: dict[str, torch.nn.Module]) -> int:
    return int(nets["personalize_decoder"].latent_dim)


def test_tiny_networks_structure(nets):
    assert set(nets) == {"personalize_encoder", "personalize_decoder"}
    assert all(not m.training for m in nets.values())
    assert latent_dim(nets) == nets["personalize_encoder"].latent_dim


def test_shapes_and_ranges(nets, torch_threads):
    enc, dec = nets["personalize_encoder"], nets["personalize_decoder"]
    x = torch.rand(5, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        mu, logvar = enc(x)
        y = dec(mu)
    assert mu.shape == logvar.shape == (5, latent_dim(nets))
    assert y.shape == (5, 3, 64, 48) and float(y.abs().max()) <= 1.0


def test_logvar_is_clamped_for_fp16_engines(torch_threads):
    enc = VAE(latent_dim=8, width=4).encoder.eval()
    with torch.no_grad():
        enc.head.bias.fill_(1e4)  # would overflow exp() in fp16 without the clamp
        _, logvar = enc(torch.zeros(2, 3, 64, 48))
        assert float(logvar.max()) == LOGVAR_RANGE[1]
        enc.head.bias.fill_(-1e4)
        _, logvar = enc(torch.zeros(2, 3, 64, 48))
        assert float(logvar.min()) == LOGVAR_RANGE[0]


def test_batch_independence_in_eval_mode(nets, torch_threads):
    """A row's output never depends on its batch neighbours (the dynamic batcher mixes shoppers)."""
    for name, net in nets.items():
        x = torch.from_numpy(example_input(name, 6, latent_dim(nets), seed=1))
        with torch.no_grad():
            batch = as_list(net(x))
            alone = [as_list(net(x[i : i + 1])) for i in range(6)]
        for j, out in enumerate(batch):
            np.testing.assert_allclose(out, np.concatenate([a[j] for a in alone]), atol=1e-5)


def test_no_batch_statistic_layers():
    for net in tiny_networks().values():
        norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert not norms


def test_checkpoint_round_trip_is_fp16_and_splits_the_networks(tmp_path, torch_threads):
    torch.manual_seed(0)
    vae = VAE(latent_dim=8, width=4).eval()
    path = tmp_path / f"{vae_mod.CHECKPOINT_NAME}.safetensors"
    save_vae(vae, path)
    from safetensors.torch import load_file

    stored = load_file(str(path))
    assert all(v.dtype == torch.float16 for v in stored.values())
    assert {k.split(".")[0] for k in stored} == {"encoder", "decoder"}
    nets = load_networks(tmp_path)  # sizes come from the file's metadata (no .json needed)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        mu_ref, _ = vae.encoder(x)
        mu, _ = nets["personalize_encoder"](x)
        np.testing.assert_allclose(mu.numpy(), mu_ref.numpy(), atol=1e-2)  # fp16 storage: close
        z = torch.randn(2, 8)
        np.testing.assert_allclose(nets["personalize_decoder"](z).numpy(), vae.decoder(z).numpy(), atol=2e-2)
    assert load_vae(path).encoder.latent_dim == 8


# --- ONNX, ONNX Runtime and OpenVINO ----------------------------------------------------


def export(net: torch.nn.Module, name: str, dim: int, path: Path) -> Path:
    names_in, names_out = SIGNATURES[name]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.from_numpy(example_input(name, 2, dim)),),
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "batch"} for n in names_in + names_out},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def onnx_files(nets, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("personalize_onnx")
    return {name: export(net, name, latent_dim(nets), root / f"{name}.onnx") for name, net in nets.items()}


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_onnx_graph_is_opset17_with_dynamic_batch(onnx_files, name):
    model = onnx.load(str(onnx_files[name]))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    names_in, names_out = SIGNATURES[name]
    assert [i.name for i in model.graph.input] == names_in
    assert [o.name for o in model.graph.output] == names_out
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = {n.op_type for n in model.graph.node}
    # Only ops every target handles; no normalisation, no data-dependent shapes.
    assert ops <= {
        "Conv",
        "Sigmoid",
        "Mul",
        "Gemm",
        "Slice",
        "Clip",
        "Reshape",
        "Resize",
        "Tanh",
        "Flatten",
        "Constant",
        "Identity",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Concat",
        "Cast",
    }, ops


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_onnxruntime_matches_pytorch(nets, onnx_files, name, torch_threads):
    sess = ort.InferenceSession(str(onnx_files[name]), providers=["CPUExecutionProvider"])
    names_in, names_out = SIGNATURES[name]
    for batch in (1, 3, 8):
        x = example_input(name, batch, latent_dim(nets), seed=10 + batch)
        with torch.no_grad():
            ref = as_list(nets[name](torch.from_numpy(x)))
        got = sess.run(names_out, {names_in[0]: x})
        for r, g in zip(ref, got, strict=True):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, atol=1e-4)


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_openvino_loads_and_matches(nets, onnx_files, name, torch_threads):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(onnx_files[name])),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
    )
    names_in, names_out = SIGNATURES[name]
    x = example_input(name, 4, latent_dim(nets), seed=7)
    with torch.no_grad():
        ref = as_list(nets[name](torch.from_numpy(x)))
    result = compiled({names_in[0]: x})
    for out_name, r in zip(names_out, ref, strict=True):
        np.testing.assert_allclose(result[compiled.output(out_name)], r, atol=1e-4)
