"""The personalisation maths (ecomgen.serving.aggregate): aggregation, sampling, validation, nearest."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ecomgen.errors import RequestError
from ecomgen.serving.aggregate import (
    MAX_COUNT,
    MAX_HISTORY,
    aggregate,
    check_count,
    check_history,
    check_seed,
    check_weights,
    nearest,
    sample,
)
from tests.conftest import REPO_ROOT


def posteriors(n: int = 5, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(-2, 1, size=(n, dim)).astype(np.float32)


def test_uniform_weights_give_the_mixture_moments():
    mu, logvar = posteriors()
    m, v = aggregate(mu, logvar)
    np.testing.assert_allclose(m, mu.mean(0), rtol=1e-5, atol=1e-6)
    # Law of total variance: mean of the variances + variance of the means.
    np.testing.assert_allclose(v, np.exp(logvar).mean(0) + mu.var(0), rtol=1e-5)
    m2, v2 = aggregate(mu, logvar, np.ones(5, np.float32))
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(v, v2)
    assert m.dtype == v.dtype == np.float32


def test_mixture_variance_matches_samples_of_the_mixture():
    mu, logvar = posteriors(3, 4)
    w = np.array([0.2, 0.5, 0.3])
    rng = np.random.default_rng(1)
    comp = rng.choice(3, size=400_000, p=w)
    draws = mu[comp] + np.exp(0.5 * logvar[comp]) * rng.standard_normal((400_000, 4))
    m, v = aggregate(mu, logvar, w)
    np.testing.assert_allclose(m, draws.mean(0), atol=0.01)
    np.testing.assert_allclose(v, draws.var(0), rtol=0.02)


def test_a_zero_weight_ignores_that_item():
    mu, logvar = posteriors()
    w = np.array([1.0, 0.0, 2.0, 0.0, 1.0], np.float32)
    keep = w > 0
    full = aggregate(mu, logvar, w)
    dropped = aggregate(mu[keep], logvar[keep], w[keep])
    for a, b in zip(full, dropped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # ...and the ignored item really is different (the test would pass trivially otherwise).
    assert not np.allclose(aggregate(mu, logvar)[0], full[0])


def test_one_item_history_returns_that_posterior():
    mu, logvar = posteriors(1)
    m, v = aggregate(mu, logvar)
    np.testing.assert_allclose(m, mu[0], rtol=1e-6)
    np.testing.assert_allclose(v, np.exp(logvar[0]), rtol=1e-5)


def test_weights_are_scale_invariant():
    mu, logvar = posteriors()
    w = np.array([0.1, 3.0, 0.5, 2.0, 1.0])
    a, b = aggregate(mu, logvar, w), aggregate(mu, logvar, 1000.0 * w)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    assert not np.allclose(a[0], aggregate(mu, logvar)[0])  # and weights matter


def test_identical_items_keep_their_posterior():
    mu, logvar = posteriors(1)
    m, v = aggregate(np.repeat(mu, 7, 0), np.repeat(logvar, 7, 0))
    np.testing.assert_allclose(m, mu[0], rtol=1e-6)
    np.testing.assert_allclose(v, np.exp(logvar[0]), rtol=1e-5)


def test_sample_is_deterministic_per_seed():
    m, v = aggregate(*posteriors())
    a = sample(m, v, count=4, seed=123, temperature=0.7)
    assert a.shape == (4, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, sample(m, v, count=4, seed=123, temperature=0.7))
    assert not np.allclose(a, sample(m, v, count=4, seed=124, temperature=0.7))
    assert len({row.tobytes() for row in a}) == 4  # the count latents differ from each other
    # Same as a fresh Philox stream in a subprocess: nothing depends on process state.
    code = (
        "import numpy as np; from ecomgen.serving.aggregate import sample;"
        f"print(sample(np.array({m.tolist()}, np.float32), np.array({v.tolist()}, np.float32), 4, 123, 0.7)"
        ".tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == a.tobytes().hex()


def test_sample_uses_philox_and_scales_with_temperature():
    m = np.array([1.0, -2.0, 0.5], np.float32)
    v = np.array([4.0, 0.25, 1.0], np.float32)
    eps = np.random.Generator(np.random.Philox(9)).standard_normal((2, 3))
    expected = (m + 0.5 * np.sqrt(v) * eps).astype(np.float32)
    np.testing.assert_allclose(sample(m, v, 2, 9, 0.5), expected, rtol=1e-6)


def test_temperature_zero_gives_the_mean():
    m, v = aggregate(*posteriors())
    z = sample(m, v, count=3, seed=5, temperature=0.0)
    np.testing.assert_array_equal(z, np.repeat(m[None], 3, 0))


def test_sample_statistics_follow_the_aggregate():
    m = np.array([0.5, -1.0], np.float32)
    v = np.array([2.0, 0.1], np.float32)
    z = np.concatenate([sample(m, v, MAX_COUNT, seed, 1.0) for seed in range(4000)])
    np.testing.assert_allclose(z.mean(0), m, atol=0.03)
    np.testing.assert_allclose(z.var(0), v, rtol=0.05)


@pytest.mark.parametrize("temperature", [-0.1, float("nan"), float("inf")])
def test_bad_temperature_is_a_configuration_error(temperature):
    with pytest.raises(ValueError, match="temperature"):
        sample(np.zeros(2, np.float32), np.ones(2, np.float32), 1, 0, temperature)


# --- validation --------------------------------------------------------------------


def test_history_size_limits():
    check_history(1)
    check_history(MAX_HISTORY)
    with pytest.raises(RequestError, match="history: empty"):
        check_history(0)
    with pytest.raises(RequestError, match=f"history: 33 images, at most {MAX_HISTORY}"):
        check_history(33)
    with pytest.raises(RequestError, match="history: empty"):
        aggregate(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))


@pytest.mark.parametrize("count", [0, -1, MAX_COUNT + 1])
def test_count_out_of_range(count):
    with pytest.raises(RequestError, match=f"count: {count} is out of range 1..{MAX_COUNT}"):
        check_count(np.array([count], np.int32))
    with pytest.raises(RequestError, match="count"):
        sample(np.zeros(2, np.float32), np.ones(2, np.float32), count, 0)


def test_count_and_seed_accept_triton_shaped_inputs():
    assert check_count(np.array([16], np.int32)) == 16
    assert check_count(3) == 3
    assert check_seed(np.array([2**63 - 1], np.int64)) == 2**63 - 1
    with pytest.raises(RequestError, match="seed: -1 is out of range"):
        check_seed(np.array([-1], np.int64))
    with pytest.raises(RequestError, match="count: expected one value"):
        check_count(np.array([1, 2], np.int32))
    with pytest.raises(RequestError, match="count: expected an integer"):
        check_count(np.array([1.5], np.float32))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(4, np.float32), "weights: shape \\(4,\\) does not match the history's 3 images"),
        (np.ones((3, 1), np.float32), "weights: shape \\(3, 1\\) does not match"),
        (np.array([1.0, -0.5, 1.0], np.float32), "weights: negative weight at index 1"),
        (np.zeros(3, np.float32), "weights: all weights are zero"),
        (np.array([1.0, np.nan, 1.0], np.float32), "weights: contains NaN"),
        (np.array([1.0, np.inf, 1.0], np.float32), "weights: contains an infinite value"),
    ],
    ids=["too-long", "wrong-rank", "negative", "all-zero", "nan", "inf"],
)
def test_bad_weights_name_the_problem(weights, message):
    with pytest.raises(RequestError, match=message):
        check_weights(weights, 3)
    mu, logvar = posteriors(3)
    with pytest.raises(RequestError, match=message):
        aggregate(mu, logvar, weights)


def test_weights_are_normalised():
    np.testing.assert_allclose(check_weights(np.array([1.0, 3.0]), 2), [0.25, 0.75])
    np.testing.assert_allclose(check_weights(None, 4), [0.25] * 4)


# --- nearest -------------------------------------------------------------------------


def test_nearest_on_a_toy_index():
    index = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [3.0, 3.0]], np.float32)
    ids = np.array([101, 102, 103, 104], np.int64)
    queries = np.array([[9.0, 1.0], [0.1, 0.2], [2.0, 4.0]], np.float32)
    got = nearest(index, ids, queries, k=2)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[102, 104], [101, 104], [104, 103]])
    # k = M returns a full ranking; an exact catalogue latent is its own nearest item.
    assert set(nearest(index, ids, queries[:1], k=4)[0]) == set(ids)
    np.testing.assert_array_equal(nearest(index, ids, index, k=1)[:, 0], ids)


def test_nearest_matches_brute_force_ranking_and_breaks_ties_by_row():
    rng = np.random.default_rng(3)
    index = rng.normal(size=(200, 16)).astype(np.float32)
    ids = rng.permutation(10_000)[:200].astype(np.int64)
    q = rng.normal(size=(5, 16)).astype(np.float32)
    d = ((q[:, None].astype(np.float64) - index[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(nearest(index, ids, q, 7), ids[np.argsort(d, axis=1)[:, :7]])
    dup = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]], np.float32)
    np.testing.assert_array_equal(nearest(dup, np.array([7, 8, 9]), np.array([[1.0, 1.0]]), 2), [[7, 8]])


def test_nearest_rejects_bad_k_and_shapes():
    index = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.3"):
        nearest(index, np.arange(3), np.zeros((1, 2)), 4)
    with pytest.raises(ValueError, match="share L"):
        nearest(index, np.arange(3), np.zeros((1, 5)), 1)


def test_the_serving_module_does_not_import_torch():
    code = "import sys, ecomgen.serving.aggregate; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_request_latents_is_validate_aggregate_sample():
    from ecomgen.serving.aggregate import request_latents

    mu, logvar = posteriors(3)
    w = np.array([1.0, 2.0, 0.0], np.float32)
    z = request_latents(mu, logvar, w, np.array([5], np.int32), np.array([77], np.int64), 0.5)
    np.testing.assert_array_equal(z, sample(*aggregate(mu, logvar, w), 5, 77, 0.5))
    with pytest.raises(RequestError, match="weights: all weights are zero"):
        request_latents(mu, logvar, np.zeros(3), 1, 0, 0.5)
    with pytest.raises(RequestError, match="seed"):
        request_latents(mu, logvar, None, 1, np.array([-5]), 0.5)


# --- colour --------------------------------------------------------------------------


def test_lab_round_trip_and_reference_values():
    from ecomgen.serving.aggregate import lab_to_srgb, srgb_to_lab

    rgb = np.random.default_rng(0).integers(0, 256, (500, 3))
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 0, 0])), [53.24, 80.09, 67.20], atol=0.1)
    assert lab_to_srgb(np.array([50.0, 200.0, 0.0])).max() <= 255  # out of gamut: clipped


def test_dominant_colour_ignores_the_white_background_and_white_products_use_all_pixels():
    from ecomgen.serving.aggregate import dominant_colour, srgb_to_lab

    img = np.full((2, 64, 48, 3), 255, np.uint8)
    img[0, 20:40, 10:30] = (200, 30, 30)  # a red product on white
    img[1, 0:2, 0:2] = (0, 0, 0)  # 4 dark pixels: under 3% foreground, so the median of all pixels
    lab = dominant_colour(img)
    np.testing.assert_allclose(lab[0], srgb_to_lab(np.array([200, 30, 30])), atol=1e-6)
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=0.05)


def test_weighted_median_is_the_median_for_equal_weights_and_follows_weights():
    from ecomgen.serving.aggregate import weighted_median

    rng = np.random.default_rng(4)
    for n in (1, 2, 5, 8):
        x = rng.normal(size=(n, 3))
        np.testing.assert_allclose(weighted_median(x, np.ones(n)), np.median(x, 0), rtol=1e-12)
    x = np.array([[0.0], [1.0], [10.0]])
    assert weighted_median(x, np.array([1.0, 1.0, 5.0]))[0] == 10.0
    assert weighted_median(x, np.array([5.0, 1.0, 1.0]))[0] == 0.0


def test_history_colour_drops_zero_weights_and_resists_an_outlier():
    from ecomgen.serving.aggregate import history_colour

    red, black = [50.0, 70.0, 50.0], [10.0, 0.0, 0.0]
    palette = np.array([red, red, red, black])
    np.testing.assert_allclose(history_colour(palette), red)  # the median, not the mean
    np.testing.assert_allclose(history_colour(palette, np.array([0, 0, 0, 1.0])), black)
    with pytest.raises(RequestError, match="weights"):
        history_colour(palette, np.zeros(4))


def linear_predictor(dim: int):
    """A ColourPredictor that reads L*a*b* straight off z[:3] (identity layers, no hidden SiLU)."""
    from ecomgen.serving.aggregate import ColourPredictor

    w = np.zeros((dim, 3))
    w[:3, :3] = np.eye(3)
    return ColourPredictor((w,), (np.zeros(3),), np.ones(3), {})


def test_choose_by_colour_keeps_the_nearest_candidates_in_order():
    from ecomgen.serving.aggregate import choose_by_colour

    pred = np.array([[0.0, 0, 0], [5, 0, 0], [1, 0, 0], [1, 0, 0], [9, 9, 9]])
    np.testing.assert_array_equal(choose_by_colour(pred, np.array([1.0, 0, 0]), 3), [2, 3, 0])


def test_request_latents_choose_by_colour_from_the_same_stream():
    from ecomgen.serving.aggregate import ColourChoice, request_latents

    mu, logvar = posteriors(4, 8)
    m, v = aggregate(mu, logvar)
    target = np.array([2.0, -1.0, 0.5])
    choice = ColourChoice(linear_predictor(8), target, 64)
    z = request_latents(mu, logvar, None, 4, 9, 0.75, choice)
    cands = np.random.Generator(np.random.Philox(9)).standard_normal((64, 8))
    m64, v64 = m.astype(np.float64), v.astype(np.float64)
    cands = (m64[None] + 0.75 * np.sqrt(v64)[None] * cands).astype(np.float32)
    # The first `count` candidates are exactly what plain sampling returns...
    np.testing.assert_array_equal(cands[:4], sample(m, v, 4, 9, 0.75))
    # ...and the kept ones are the 4 candidates whose predicted colour is nearest the target.
    d = ((cands[:, :3].astype(np.float64) - target) ** 2).sum(1)
    np.testing.assert_array_equal(z, cands[np.argsort(d, kind="stable")[:4]])
    np.testing.assert_array_equal(z, request_latents(mu, logvar, None, 4, 9, 0.75, choice))  # deterministic
    assert ((z[:, :3] - target) ** 2).sum(1).mean() < ((cands[:4, :3] - target) ** 2).sum(1).mean()
    # No more candidates than `count`: plain sampling.
    few = ColourChoice(linear_predictor(8), target, 4)
    np.testing.assert_array_equal(
        request_latents(mu, logvar, None, 4, 9, 0.75, few), sample(m, v, 4, 9, 0.75)
    )


def test_recolour_moves_the_product_a_bounded_step_and_keeps_the_background():
    from ecomgen.serving.aggregate import dominant_colour, recolour, srgb_to_lab

    img = np.full((1, 64, 48, 3), 255, np.uint8)
    img[0, 16:48, 8:40] = (120, 90, 60)  # a brown product
    img[0, 16:48, 8:12] = (100, 75, 50)  # with some shading
    red = srgb_to_lab(np.array([200, 30, 30]))
    before = dominant_colour(img)[0]
    far = float(np.linalg.norm(red - before))
    out = recolour(img, red[None], max_shift=10.0)
    after = dominant_colour(out)[0]
    assert np.linalg.norm(after - before) == pytest.approx(10.0, abs=1.0)  # capped
    assert np.linalg.norm(red - after) == pytest.approx(far - 10.0, abs=1.0)  # towards red
    np.testing.assert_array_equal(out[0, :16], img[0, :16])  # the white background is untouched
    # Shading survives: the two tones stay different.
    assert not np.array_equal(out[0, 20, 9], out[0, 20, 20])
    full = recolour(img, red[None], max_shift=1000.0)
    np.testing.assert_allclose(dominant_colour(full)[0], red, atol=2.0)
    np.testing.assert_array_equal(recolour(img, red[None], 0.0), img)
    assert img[0, 20, 20].tolist() == [120, 90, 60]  # the input is not modified


def test_recolour_is_continuous_across_the_background_boundary():
    """A pixel that one level moves across the background rule (another runtime, another batch)
    changes by about a level, not by the whole shift."""
    from ecomgen.serving.aggregate import foreground, recolour, srgb_to_lab

    img = np.full((1, 64, 48, 3), 255, np.uint8)
    img[0, 16:48, 8:40] = (120, 90, 60)
    red = srgb_to_lab(np.array([200, 30, 30]))[None]
    grey = [v for v in range(200, 256) if foreground(srgb_to_lab(np.array([v, v, v])))[()]]
    edge = max(grey)  # the lightest grey still counted as product; one level lighter is background
    a, b = img.copy(), img.copy()
    a[0, 2, 2], b[0, 2, 2] = edge, edge + 1
    assert foreground(srgb_to_lab(a[0, 2, 2])) and not foreground(srgb_to_lab(b[0, 2, 2]))
    ra, rb = recolour(a, red, 20.0), recolour(b, red, 20.0)
    assert np.abs(ra[0, 2, 2].astype(int) - rb[0, 2, 2].astype(int)).max() <= 3
    np.testing.assert_array_equal(ra[0, 16:], rb[0, 16:])
