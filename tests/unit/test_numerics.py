"""The one quantiser, the one PSNR and the one output-parity rule (ecomgen.numerics), and that the
product code has no others (nor a second ``lscpu`` parser beside ecomgen.hostinfo)."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ecomgen.models.sr import to_uint8 as sr_to_uint8
from ecomgen.numerics import (
    PARITY_MIN_PSNR_DB,
    mask_to_uint8,
    output_levels,
    outputs_match,
    psnr,
    psnr_uint8,
    quantise,
    to_uint8_hwc,
)

ROOT = Path(__file__).resolve().parents[2]

# --- the quantiser -----------------------------------------------------------------------------------


def test_images_map_minus_one_to_zero_and_one_to_255():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], np.float32)
    assert quantise(x).tolist() == [0, 64, 128, 191, 255]
    assert quantise(x).dtype == np.uint8


def test_masks_use_zero_to_one():
    m = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    assert quantise(m, 0.0, 1.0).tolist() == [0, 64, 128, 255]
    batch = m.reshape(1, 1, 2, 2)
    assert mask_to_uint8(batch).shape == (1, 2, 2) and mask_to_uint8(batch).ravel().tolist() == [
        0,
        64,
        128,
        255,
    ]


def test_out_of_range_values_are_clipped_not_wrapped():
    assert quantise(np.array([-3.0, -1.0001, 1.0001, 3.0, 1e30, -1e30], np.float32)).tolist() == [
        0,
        0,
        255,
        255,
        255,
        0,
    ]
    assert quantise(np.array([-0.5, 1.5]), 0.0, 1.0).tolist() == [0, 255]


def test_nan_is_the_low_end_and_inf_the_nearest_end():
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    assert quantise(x).tolist() == [0, 255, 0]
    assert quantise(x, 0.0, 1.0).tolist() == [0, 255, 0]
    assert quantise(x, 10.0, 20.0).tolist() == [0, 255, 0]


def test_halves_round_up():
    """A value exactly between two levels goes to the upper one (floor(x + 0.5) in float32), on every
    level: with the range 0..255 one unit is one level, and these halves are exact in float32."""
    levels = np.arange(0, 255, dtype=np.float32)
    assert np.array_equal(quantise(levels + 0.5, 0.0, 255.0), levels.astype(np.uint8) + 1)
    below = np.nextafter(levels + 0.5, np.float32(-1.0))
    assert np.array_equal(quantise(below[1:], 0.0, 255.0), levels[1:].astype(np.uint8))
    # The one float32 artefact: the largest float below 0.5, plus 0.5, rounds to 1.0 in float32, so
    # it is level 1 (the served conversion does the same; a change here changes served images).
    assert quantise(below[:1], 0.0, 255.0).tolist() == [1]
    # In the image range: 0.0 is 127.5 levels above -1, so it is level 128; a hair below is 127.
    assert quantise(np.array([0.0, -1e-6], np.float32)).tolist() == [128, 127]


def test_every_level_round_trips():
    """uint8 -> [-1, 1] the way the pre steps convert (u / 127.5 - 1) -> uint8 is the identity."""
    u = np.arange(256, dtype=np.uint8)
    assert np.array_equal(quantise(u.astype(np.float32) / np.float32(127.5) - np.float32(1.0)), u)


def test_to_uint8_hwc_is_the_quantiser_moved_to_channels_last():
    x = np.random.default_rng(0).uniform(-1.2, 1.2, (2, 3, 4, 5)).astype(np.float32)
    out = to_uint8_hwc(x)
    assert out.shape == (2, 4, 5, 3) and out.flags.c_contiguous
    assert np.array_equal(out, quantise(x).transpose(0, 2, 3, 1))


def test_the_sr_models_torch_conversion_is_the_same_rule():
    """ecomgen.models.sr.to_uint8 is a torch adapter of to_uint8_hwc: the same levels, NaN included."""
    x = np.random.default_rng(1).uniform(-1.5, 1.5, (2, 3, 6, 5)).astype(np.float32)
    x[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    got = sr_to_uint8(torch.from_numpy(x))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
    assert np.array_equal(got.numpy(), to_uint8_hwc(x))


# --- PSNR -----------------------------------------------------------------------------------------


def test_psnr_of_identical_images_is_infinite():
    a = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    assert psnr(a, a.copy()) == math.inf and psnr_uint8(a, a.copy()) == math.inf


def test_psnr_does_not_wrap_uint8():
    """0 vs 255 everywhere is MSE 255**2, 0 dB: uint8 subtraction would wrap to 1 level, 48 dB."""
    a, b = np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)
    assert psnr(a, b) == pytest.approx(0.0) and psnr(b, a) == pytest.approx(0.0)


def test_psnr_matches_the_definition_and_the_peak():
    a = np.zeros((1, 4, 4, 3), np.float64)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))
    assert psnr(a, a + 0.01, peak=1.0) == pytest.approx(40.0)
    assert psnr(a, a + 0.02, peak=2.0) == pytest.approx(40.0)


def test_per_image_psnr_is_one_value_per_image():
    """axis=(1, 2, 3) gives per-image values (inf for an identical one); their mean is not the PSNR
    of the whole batch, which is why the SR and VAE evaluations average per image."""
    ref = np.zeros((3, 4, 4, 3), np.uint8)
    got = ref.copy()
    got[1] += 1  # MSE 1
    got[2] += 10  # MSE 100
    per = psnr(ref, got, axis=(1, 2, 3))
    assert isinstance(per, np.ndarray) and per.shape == (3,)
    assert per[0] == math.inf
    assert per[1:] == pytest.approx([20 * math.log10(255), 20 * math.log10(25.5)])
    assert psnr(ref[1:], got[1:]) == pytest.approx(10 * math.log10(255**2 / 50.5))


# --- the output-parity rule --------------------------------------------------------------------------


def test_outputs_match_at_the_threshold():
    ref = np.zeros((1, 3, 8, 8), np.float32)
    assert outputs_match(ref, ref.copy(), "image") == (True, math.inf)
    one_level = ref + np.float32(1 / 127.5)  # every pixel one level off: 48.1 dB
    ok, db = outputs_match(ref, one_level, "image")
    assert ok and db == pytest.approx(20 * math.log10(255))
    far = ref + np.float32(4 / 127.5)  # 4 levels: 36.1 dB
    ok, db = outputs_match(ref, far, "image")
    assert not ok and db < PARITY_MIN_PSNR_DB


def test_outputs_match_quantises_masks_over_zero_to_one():
    ref = np.full((1, 1, 4, 4), 0.5, np.float32)
    ok, db = outputs_match(ref, ref + np.float32(1 / 255), "mask")
    assert ok and db == pytest.approx(20 * math.log10(255))
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 1, (2, 1, 16, 16)).astype(np.float32)
    got = (ref + rng.normal(0, 0.01, ref.shape)).astype(np.float32)
    mask_db = psnr_uint8(quantise(ref, 0.0, 1.0), quantise(got, 0.0, 1.0))
    assert outputs_match(ref, got, "mask")[1] == mask_db
    assert outputs_match(ref, got, "image")[1] != mask_db  # [-1, 1]: a level is twice as wide


def test_non_finite_candidates_fail():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    got = ref.copy()
    got[0, :, :2] = np.nan
    assert outputs_match(ref, got, "image")[0] is False


@pytest.mark.parametrize("kind", ["image", "mask", "logits"])
@pytest.mark.parametrize("constant", [False, True])
def test_output_levels_are_the_levels_outputs_match_scores(kind: str, constant: bool):
    """output_levels (level differences for the parity gate and the benchmarks) is what
    outputs_match scores, for every kind."""
    rng = np.random.default_rng(3)
    ref = np.full((2, 3, 5, 4), 0.25, np.float32) if constant else rng.uniform(-1, 1, (2, 3, 5, 4))
    got = (ref + rng.normal(0, 0.02, ref.shape)).astype(np.float32)
    want8, got8 = output_levels(kind, ref.astype(np.float32), got)
    assert psnr_uint8(want8, got8) == outputs_match(ref.astype(np.float32), got, kind)[1]


# --- one home each in the product code ---------------------------------------------------------------

PRODUCT = ("ecomgen", "export", "training", "benchmarks", "deploy", "docker", "docs")
NUMERICS = "ecomgen/numerics.py"
HOSTINFO = "ecomgen/hostinfo.py"
PSNR_NAME = re.compile(r"psnr", re.IGNORECASE)
QUANTISER_NAME = re.compile(r"quanti[sz]", re.IGNORECASE)
CONVERSION_NAME = re.compile(r"to_uint8", re.IGNORECASE)
HOME_QUANTISERS = {"quantise", "to_uint8_hwc", "mask_to_uint8"}
LSCPU = re.compile(r"\blscpu\b")


def product_files() -> Iterator[tuple[str, ast.Module]]:
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


FILES = list(product_files())


def defined_functions(tree: ast.Module) -> Iterator[tuple[str, ast.stmt]]:
    """Every function definition, and every lambda bound to a name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield target.id, node


def called_names(node: ast.AST) -> set[str]:
    """Names a node calls: ``f(...)`` gives f, ``a.b.f(...)`` gives f."""
    out = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            if isinstance(call.func, ast.Name):
                out.add(call.func.id)
            elif isinstance(call.func, ast.Attribute):
                out.add(call.func.attr)
    return out


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (of the module, classes and functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_the_scan_sees_the_homes():
    """The rules below are only as good as the scan: it must find the homes themselves."""
    names = {path: {n for n, _ in defined_functions(tree)} for path, tree in FILES}
    assert {"psnr", "psnr_uint8", "quantise", "to_uint8_hwc", "outputs_match"} <= names[NUMERICS]
    assert "cpu_model" in names[HOSTINFO]
    assert any(
        LSCPU.search(n.value)
        for n in ast.walk(dict(FILES)[HOSTINFO])
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


def test_one_psnr():
    """PSNR is defined once, in ecomgen/numerics.py. Outside it, no function (or lambda bound to a
    name) has ``psnr`` in its name, and nothing calls ``log10`` (``np.log10``, ``torch.log10``,
    ``math.log10``, ...): this code base uses log10 for nothing but PSNR, so a PSNR written under
    another name is caught too. A helper that formats a PSNR for a report needs a name without psnr."""
    found = []
    for path, tree in FILES:
        if path == NUMERICS:
            continue
        found += [
            f"{path}:{n.lineno} def {name}" for name, n in defined_functions(tree) if PSNR_NAME.search(name)
        ]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _calls_log10(node):
                found.append(f"{path}:{node.lineno} calls log10")
    assert not found, "use ecomgen.numerics.psnr:\n" + "\n".join(found)


def _calls_log10(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Name) and f.id == "log10") or (
        isinstance(f, ast.Attribute) and f.attr == "log10"
    )


def test_one_quantiser():
    """Float -> uint8 as clients see it is ecomgen.numerics.quantise (and to_uint8_hwc, mask_to_uint8,
    built on it). Outside ecomgen/numerics.py, no function has ``quantis``/``quantiz`` in its name, and
    a function with ``to_uint8`` in its name (a float -> uint8 conversion; ``from_uint8*`` is the
    inverse) must call one of those three: an adapter (e.g. torch tensors in ecomgen.models.sr), not
    a second rule."""
    found = []
    for path, tree in FILES:
        if path == NUMERICS:
            continue
        for name, node in defined_functions(tree):
            line = f"{path}:{node.lineno} def {name}"
            if QUANTISER_NAME.search(name):
                found.append(line)
            elif CONVERSION_NAME.search(name) and not HOME_QUANTISERS & called_names(node):
                found.append(line + " (converts without ecomgen.numerics)")
    assert not found, "use ecomgen.numerics.quantise:\n" + "\n".join(found)


def test_one_lscpu_parser():
    """Only ecomgen/hostinfo.py runs or parses ``lscpu``: outside it, no string constant of the code
    (docstrings excepted, which may name it) contains the word lscpu, the way a command line or a
    parser of its output would."""
    found = []
    for path, tree in FILES:
        if path == HOSTINFO:
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if id(node) not in skip and LSCPU.search(text):
                found.append(f"{path}:{node.lineno} {node.value[:60]!r}")
    assert not found, "use ecomgen.hostinfo (cpu_model, machine_description):\n" + "\n".join(found)
