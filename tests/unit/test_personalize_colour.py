"""personalize's colour: the latent -> colour predictor (training.vae_colour) and the serving steps
that measure the history's colour, choose latents by it and recolour the decoded images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from google.protobuf import json_format

from ecomgen.numerics import from_uint8_hwc
from ecomgen.serving.aggregate import (
    ColourChoice,
    dominant_colour,
    load_colour_predictor,
    recolour,
    request_latents,
    srgb_to_lab,
)
from ecomgen.serving.handlers import load_handler
from ecomgen.serving.step import Step, StepConfig
from ecomgen.specs.personalize import MAX_SHIFT, TEMPERATURE
from export.repository import repository_models
from tests.conftest import REPO_ROOT
from training import vae_colour
from training.vae_colour import COLOUR_FILE

RED = (200, 30, 30)


def product(colour: tuple[int, int, int], n: int = 1) -> np.ndarray:
    img = np.full((n, 64, 48, 3), 255, np.uint8)
    img[:, 12:52, 8:40] = colour
    return img


def predictor_file(path: Path, latent_dim: int = 64, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = vae_colour.mlp(latent_dim)
    vae_colour.save_predictor(net, np.array([20.0, 30.0, 40.0]), path, {"latent_dim": str(latent_dim)})
    return path


def test_predictor_file_runs_in_numpy_as_in_torch(tmp_path):
    path = predictor_file(tmp_path / COLOUR_FILE, latent_dim=16, seed=0)
    torch.manual_seed(0)
    net = vae_colour.mlp(16)  # the same weights as the file
    z = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(z)).numpy() * np.array([20.0, 30.0, 40.0])
    pred = load_colour_predictor(path)
    assert pred.latent_dim == 16 and pred.metadata["latent_dim"] == "16"
    np.testing.assert_allclose(pred(z), expected, rtol=1e-4, atol=1e-4)


def test_colour_dry_run_writes_the_predictor_and_its_record(tmp_path, torch_threads):
    vae_colour.main(["--dry-run", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "personalize_colour.json").read_text())
    assert record["command"].startswith("python -m training.vae_colour --dry-run")
    assert record["data"] == "fake" and record["wall_time_s"] >= 0 and record["machine"]["cpu"]
    assert {"train", "validation_train_split_shoppers", "heldout_split_shoppers"} <= set(record["metrics"])
    assert load_colour_predictor(tmp_path / COLOUR_FILE).latent_dim == 8


def test_training_histories_come_in_three_kinds():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    colours = ["Red", "Blue"] * 20
    hist = vae_colour.shopper_histories(labels, colours, 30, rng)
    assert len(hist) == 30 and all(1 <= len(h) <= 16 for h in hist)
    assert all(len(set(labels[h])) == 1 for h in hist[0::3])  # one article type
    assert all(len({colours[i] for i in h}) == 1 for h in hist[1::3])  # one colour


# --- the served steps ---------------------------------------------------------------


def load_step(name: str, model_dir: Path, **params: str) -> Step:
    """A step as the backend builds it from its generated config (``params`` override the config's)."""
    (model,) = [m for m in repository_models("cpu") if m.name == name]
    config = json_format.MessageToDict(model.config, preserving_proto_field_name=True)
    step_config = StepConfig.from_model_config(config, model_dir)
    step_config.params.update(params)
    return load_handler(step_config.params["handler"])(step_config)


def test_the_spec_wires_colour_through_the_steps():
    pre, agg, post = (load_step(f"personalize_{s}", REPO_ROOT) for s in ("pre", "aggregate", "post"))
    assert "palette" in pre.config.outputs and "palette" in agg.config.inputs
    assert "colour" in agg.config.outputs and "colour" in post.config.inputs
    assert post.params["max_shift"] == MAX_SHIFT and agg.params["temperature"] == TEMPERATURE
    # The ablation left the colour choice of latents off: no predictor is served.
    assert "colour_predictor" not in agg.params and agg.predictor is None
    (model,) = [m for m in repository_models("cpu") if m.name == "personalize_aggregate"]
    assert COLOUR_FILE not in model.artifacts


def test_pre_measures_each_history_photos_colour(tmp_path):
    pre = load_step("personalize_pre", tmp_path)
    history = np.concatenate([product(RED, 2), product((30, 30, 200))])
    out = pre.compute({"history": history})
    assert out["palette"].shape == (3, 3) and out["palette"].dtype == np.float32
    np.testing.assert_allclose(out["palette"][0], srgb_to_lab(np.array(RED)), atol=1e-3)
    np.testing.assert_allclose(out["palette"], dominant_colour(history), atol=1e-3)


def test_aggregate_chooses_by_colour_when_configured_with_the_predictor_beside_it(tmp_path, caplog):
    predictor_file(tmp_path / COLOUR_FILE)
    on = {"candidates": "64", "colour_predictor": COLOUR_FILE}
    agg = load_step("personalize_aggregate", tmp_path, **on)
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(3, 64)).astype(np.float32), np.full((3, 64), -2.0, np.float32)
    palette = np.repeat(srgb_to_lab(np.array(RED))[None], 3, 0).astype(np.float32)
    pi = np.full(3, 1 / 3, np.float32)
    batch = {
        "mu": mu,
        "logvar": logvar,
        "pi": pi,
        "palette": palette,
        "seed": np.array([5], np.int64),
        "count": np.array([4], np.int32),
    }
    out = agg.compute(batch)
    pred = load_colour_predictor(tmp_path / COLOUR_FILE)
    choice = ColourChoice(pred, palette[0].astype(np.float64), 64)
    np.testing.assert_array_equal(out["z"], request_latents(mu, logvar, pi, 4, 5, float(TEMPERATURE), choice))
    assert out["colour"].shape == (4, 3)
    np.testing.assert_allclose(out["colour"], np.repeat(palette[:1], 4, 0), atol=1e-4)
    # Without the file: plain sampling, and a warning at load; as served (no parameters): plain.
    plain = load_step("personalize_aggregate", tmp_path / "empty", **on)
    assert "not chosen by colour" in caplog.text
    expected = request_latents(mu, logvar, pi, 4, 5, float(TEMPERATURE))
    np.testing.assert_array_equal(plain.compute(batch)["z"], expected)
    np.testing.assert_array_equal(load_step("personalize_aggregate", tmp_path).compute(batch)["z"], expected)


def test_post_recolours_towards_the_history_colour(tmp_path):
    post = load_step("personalize_post", tmp_path)
    brown = product((120, 90, 60), 2)
    red = srgb_to_lab(np.array(RED)).astype(np.float32)
    out = post.compute(
        {
            "image": from_uint8_hwc(brown),
            "z": np.zeros((2, 64), np.float32),
            "colour": np.repeat(red[None], 2, 0),
        }
    )
    np.testing.assert_array_equal(out["image"], recolour(brown, np.repeat(red[None], 2, 0), float(MAX_SHIFT)))
    moved = np.linalg.norm(dominant_colour(out["image"]) - dominant_colour(brown), axis=1)
    far = float(np.linalg.norm(red - dominant_colour(brown)[0]))
    np.testing.assert_allclose(moved, min(float(MAX_SHIFT), far), atol=1.5)
    assert (out["similar"] == -1).all()  # no catalogue in tmp_path
