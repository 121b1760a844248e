"""The personalisation maths the ``personalize`` ensemble runs between encoder and decoder (numpy only).

A shopper's history of N product photos is encoded into N diagonal Gaussian posteriors
``q_i = N(mu_i, diag(exp(logvar_i)))``. The server

1. checks the request (``check_history``, ``check_count``, ``check_weights``, ``check_seed``),
2. combines the posteriors into one Gaussian (``aggregate``),
3. draws ``count`` latents around it (``sample``), which the decoder turns into images; with a
   colour predictor, draws more candidates and keeps the ``count`` whose predicted colour is
   nearest the history's (``choose_by_colour``),
4. after the decoder, moves each image's colour towards the history's, by a bounded shift in
   CIE L*a*b* (``recolour``),
5. optionally finds the nearest catalogue items to each latent (``nearest``).

``request_latents`` does 1-3 for one request in one call; ``history_colour`` is the colour
both 3 and 4 aim at (the weighted median of the history photos' ``dominant_colour``).

Everything here is deterministic for a given request, whatever else shares the batch:
the random numbers come from a per-request Philox stream, and nothing reads other rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecomgen.errors import RequestError

MAX_HISTORY = 32
MAX_COUNT = 16
MAX_SEED = 2**63 - 1


# --- request validation --------------------------------------------------------------


def check_history(n: int, name: str = "history") -> None:
    """1 <= N <= MAX_HISTORY browsed photos."""
    if n < 1:
        raise RequestError(f"{name}: empty history, at least one image is required")
    if n > MAX_HISTORY:
        raise RequestError(f"{name}: {n} images, at most {MAX_HISTORY} are allowed")


def _one_int(value: int | np.integer | np.ndarray, name: str) -> int:
    """A scalar or one-element integer array (as Triton delivers [1] inputs) -> int."""
    if isinstance(value, bool):
        raise RequestError(f"{name}: expected an integer, got a bool")
    if isinstance(value, int | np.integer):
        return int(value)
    arr = np.asarray(value)
    if arr.size != 1:
        raise RequestError(f"{name}: expected one value, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise RequestError(f"{name}: expected an integer, got dtype {arr.dtype}")
    return int(arr.reshape(()))


def check_count(count: int | np.integer | np.ndarray, name: str = "count") -> int:
    """1 <= count <= MAX_COUNT; returns it as a Python int."""
    value = _one_int(count, name)
    if not 1 <= value <= MAX_COUNT:
        raise RequestError(f"{name}: {value} is out of range 1..{MAX_COUNT}")
    return value


def check_seed(seed: int | np.integer | np.ndarray, name: str = "seed") -> int:
    """0 <= seed <= 2^63 - 1 (the INT64 input, non-negative); returns it as a Python int."""
    value = _one_int(seed, name)
    if not 0 <= value <= MAX_SEED:
        raise RequestError(f"{name}: {value} is out of range 0..2^63-1")
    return value


def check_weights(weights: np.ndarray | None, n: int, name: str = "weights") -> np.ndarray:
    """Per-photo weights (recency, dwell time): [N] finite, non-negative, not all zero.

    ``None`` means uniform. Returns float64 weights normalised to sum to 1.
    """
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] != n:
        raise RequestError(f"{name}: shape {tuple(w.shape)} does not match the history's {n} images")
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise RequestError(f"{name}: expected numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if np.isnan(w).any():
        raise RequestError(f"{name}: contains NaN")
    if np.isinf(w).any():
        raise RequestError(f"{name}: contains an infinite value")
    if (w < 0).any():
        raise RequestError(f"{name}: negative weight at index {int(np.flatnonzero(w < 0)[0])}")
    total = w.sum()
    if total <= 0:
        raise RequestError(f"{name}: all weights are zero")
    return w / total


# --- aggregation and sampling ------------------------------------------------------


def aggregate(
    mu: np.ndarray, logvar: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Combine N posteriors into one diagonal Gaussian: the moment match of their weighted mixture.

    With weights normalised to ``pi_i = w_i / sum_j w_j`` and ``var_i = exp(logvar_i)``::

        mu_agg  = sum_i pi_i mu_i
        var_agg = sum_i pi_i var_i  +  sum_i pi_i (mu_i - mu_agg)^2      (per latent dimension)

    This is the Gaussian closest (in KL(mixture || q)) to the mixture ``sum_i pi_i q_i``,
    the distribution of "a latent of something this shopper browsed". Why the mixture
    and not the product of Gaussians (precision-weighted mean, ``var = 1 / sum pi_i/var_i``):
    the product answers "which single latent explains every photo", so its variance
    shrinks below any one posterior's, and samples around it all decode to the same
    average product. The mixture keeps the spread of the history: a shopper who browsed
    eight black T-shirts gets T-shirts, one who browsed shirts and jeans gets latents
    spanning both, and the temperature in ``sample`` sets how far to go.

    Properties (tested): a zero weight drops that photo; weights are scale invariant; a
    one-photo history returns that photo's posterior exactly; uniform weights by default.

    Args:
        mu, logvar: float [N, L], the encoder's outputs for the history.
        weights: [N] non-negative, not all zero (``check_weights``); None is uniform.

    Returns:
        ``(mu_agg, var_agg)``: float32 [L] each; ``var_agg`` is a variance, not a log-variance.
    """
    mu = np.asarray(mu, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be [N, L], got {mu.shape} and {logvar.shape}")
    n = mu.shape[0]
    check_history(n)
    pi = check_weights(weights, n)
    mu_agg = pi @ mu
    var_agg = pi @ np.exp(logvar) + pi @ (mu - mu_agg) ** 2
    return mu_agg.astype(np.float32), var_agg.astype(np.float32)


def sample(
    mu_agg: np.ndarray, var_agg: np.ndarray, count: int, seed: int, temperature: float = 1.0
) -> np.ndarray:
    """``count`` latents ``z_k = mu_agg + temperature * sqrt(var_agg) * eps_k``: float32 [count, L].

    ``eps`` is standard normal from ``np.random.Generator(np.random.Philox(seed))``, drawn
    in float64 as one [count, L] block: Philox is counter-based and numpy's normal
    sampler is platform independent, so a seed gives the same latents on every host and in
    every batch. Latent k is the same whatever ``count`` is only for the same ``count``
    (the draw is row-major). ``temperature=0`` returns ``count`` copies of the mean.
    """
    mu_agg = np.asarray(mu_agg, dtype=np.float64)
    var_agg = np.asarray(var_agg, dtype=np.float64)
    if mu_agg.ndim != 1 or mu_agg.shape != var_agg.shape:
        raise ValueError(f"mu_agg and var_agg must both be [L], got {mu_agg.shape} and {var_agg.shape}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if (var_agg < 0).any() or not np.isfinite(var_agg).all():
        raise ValueError("var_agg must be finite and non-negative")
    count = check_count(count)
    seed = check_seed(seed)
    eps = np.random.Generator(np.random.Philox(seed)).standard_normal((count, mu_agg.shape[0]))
    z = mu_agg[None] + temperature * np.sqrt(var_agg)[None] * eps
    return z.astype(np.float32)


def request_latents(
    mu: np.ndarray,
    logvar: np.ndarray,
    weights: np.ndarray | None,
    count: int | np.ndarray,
    seed: int | np.ndarray,
    temperature: float,
    colour: ColourChoice | None = None,
) -> np.ndarray:
    """One shopper's request, end to end: validate, ``aggregate``, ``sample`` -> float32 [count, L].

    With ``colour``, ``colour.candidates`` latents are drawn instead and the ``count`` whose
    predicted colour is nearest ``colour.target`` are kept (``choose_by_colour``); the first
    ``count`` candidates are exactly what ``sample`` alone draws.
    ``count`` and ``seed`` may be Triton's [1] arrays; bad values raise ``RequestError``.
    """
    n = np.asarray(mu).shape[0]
    check_history(n)
    pi = check_weights(weights, n)
    count, seed = check_count(count), check_seed(seed)
    mu_agg, var_agg = aggregate(mu, logvar, pi)
    if colour is None or colour.candidates <= count:
        return sample(mu_agg, var_agg, count, seed, temperature)
    z = _draw(mu_agg, var_agg, colour.candidates, seed, temperature)
    keep = choose_by_colour(colour.predictor(z), colour.target, count)
    return z[keep]


def _draw(mu_agg: np.ndarray, var_agg: np.ndarray, n: int, seed: int, temperature: float) -> np.ndarray:
    """``sample`` without its ``count`` limit (candidates for ``choose_by_colour``)."""
    eps = np.random.Generator(np.random.Philox(seed)).standard_normal((n, mu_agg.shape[0]))
    z = (
        np.asarray(mu_agg, np.float64)[None]
        + temperature * np.sqrt(np.asarray(var_agg, np.float64))[None] * eps
    )
    return z.astype(np.float32)


# --- colour --------------------------------------------------------------------------
#
# A product's colour is the per-channel median CIE L*a*b* (D65) of its foreground pixels; the
# background is near white (L* > 90 and chroma < 8), as catalogue photos sit on white. The
# evaluation (training/vae_eval.py) measures colour agreement with exactly these functions.

BACKGROUND_L = 90.0
BACKGROUND_CHROMA = 8.0
MIN_FOREGROUND = 0.03  # below this share of foreground pixels (white on white) all pixels count
_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6 / 29
# L* = 116 fy - 16, a* = 500 (fx - fy), b* = 200 (fy - fz): one matrix product over (fx, fy, fz).
_F_TO_LAB = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]])
_LAB_OFFSET = np.array([-16.0, 0.0, 0.0])


def _linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR_U8 = _linear(np.arange(256) / 255.0)  # uint8 inputs: a table lookup, not a power per pixel


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (or [0, 255] float) sRGB [..., 3] -> CIE L*a*b* (D65), float64."""
    rgb = np.asarray(rgb)
    c = _LINEAR_U8[rgb] if rgb.dtype == np.uint8 else _linear(rgb.astype(np.float64) / 255.0)
    xyz = c @ (_RGB_TO_XYZ.T / _D65)
    f = np.cbrt(xyz)
    dark = xyz <= _DELTA**3  # the linear segment near black
    if dark.any():
        f[dark] = xyz[dark] / (3 * _DELTA**2) + 4 / 29
    return f @ _F_TO_LAB + _LAB_OFFSET


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* [..., 3] -> sRGB in [0, 255] (float64; out-of-gamut colours clipped per channel)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29)) * _D65
    c = np.clip(xyz @ np.linalg.inv(_RGB_TO_XYZ).T, 0.0, 1.0)
    c = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return 255.0 * c


def foreground(lab: np.ndarray) -> np.ndarray:
    """Which pixels of L*a*b* [..., 3] are product, not the near-white background: bool [...]."""
    return ~((lab[..., 0] > BACKGROUND_L) & (np.hypot(lab[..., 1], lab[..., 2]) < BACKGROUND_CHROMA))


def _dominant(lab: np.ndarray, fg: np.ndarray) -> np.ndarray:
    px = lab[fg] if fg.mean() >= MIN_FOREGROUND else lab.reshape(-1, 3)
    return np.median(px, axis=0)


def dominant_colour(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> each product's colour, the median L*a*b* of its foreground: [N, 3]."""
    lab = srgb_to_lab(np.asarray(images).reshape(len(images), -1, 3))
    fg = foreground(lab)
    return (
        np.stack([_dominant(lab[i], fg[i]) for i in range(len(images))]) if len(images) else np.zeros((0, 3))
    )


def weighted_median(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-column weighted median of x [N, D] (equal weights: exactly ``np.median``): [D].

    The lower weighted median, averaged with the next value where the cumulative weight of
    the sorted values is exactly one half.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out = np.empty(x.shape[1])
    for d in range(x.shape[1]):
        order = np.argsort(x[:, d], kind="stable")
        xs, cum = x[order, d], np.cumsum(w[order])
        i = int(np.searchsorted(cum, 0.5 - 1e-12))
        half = abs(cum[i] - 0.5) < 1e-9 and i + 1 < len(xs)
        out[d] = 0.5 * (xs[i] + xs[i + 1]) if half else xs[i]
    return out


def history_colour(palette: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The colour a shopper browsed: the weighted median of the history's colours [N, 3] -> [3].

    The median, not the mean: one black bag among seven red dresses does not turn the
    target brown. Zero-weight photos do not count.
    """
    palette = np.asarray(palette, dtype=np.float64)
    return weighted_median(palette, check_weights(weights, palette.shape[0]))


@dataclass(frozen=True)
class ColourPredictor:
    """A small MLP from a latent to the colour of its decoded image (``dominant_colour``, L*a*b*).

    Trained by ``training.vae_colour`` on the shipped decoder's outputs; runs in numpy
    (float64) in the aggregate step, before the decoder, on every candidate latent.
    """

    weights: tuple[np.ndarray, ...]  # [in, out] per layer
    biases: tuple[np.ndarray, ...]
    scale: np.ndarray  # [3]: the network predicts L*a*b* / scale
    metadata: dict[str, str]

    @property
    def latent_dim(self) -> int:
        return int(self.weights[0].shape[0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        h = np.asarray(z, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = h / (1.0 + np.exp(-h))  # SiLU
        return h * self.scale


def load_colour_predictor(path: str | Path) -> ColourPredictor:
    """Read ``checkpoints/personalize_colour.safetensors`` (``layer{i}.weight`` [out, in], torch
    layout, ``layer{i}.bias``, ``scale``) without torch."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    t = load_file(str(path))
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
    n = len([k for k in t if k.endswith(".weight")])
    return ColourPredictor(
        weights=tuple(t[f"layer{i}.weight"].astype(np.float64).T for i in range(n)),
        biases=tuple(t[f"layer{i}.bias"].astype(np.float64) for i in range(n)),
        scale=t["scale"].astype(np.float64),
        metadata=meta,
    )


@dataclass(frozen=True)
class ColourChoice:
    """What ``request_latents`` needs to choose latents by colour."""

    predictor: ColourPredictor
    target: np.ndarray  # [3] L*a*b*, ``history_colour``
    candidates: int


def choose_by_colour(predicted: np.ndarray, target: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` candidates whose predicted colour [M, 3] is nearest ``target`` [3]
    (CIE76 distance, the evaluation's), nearest first; ties go to the earlier candidate."""
    d2 = ((np.asarray(predicted, np.float64) - np.asarray(target, np.float64)[None]) ** 2).sum(1)
    return np.argsort(d2, kind="stable")[:count]


def product_weight(lab: np.ndarray) -> np.ndarray:
    """How much of a recolouring shift each L*a*b* pixel [..., 3] takes: [...] in [0, 1].

    1 inside the product, 0 on the white background, and a linear ramp RAMP units wide
    centred on the background rule's boundary (``foreground``), so the output is a continuous
    function of the input: a pixel that a rounding difference moves across the boundary
    (another runtime, another batch) changes by a fraction of a level, not by the whole shift.
    """
    inside = np.maximum(BACKGROUND_L - lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]) - BACKGROUND_CHROMA)
    return np.clip(0.5 + inside / RAMP, 0.0, 1.0)


RAMP = 4.0  # CIE76 units


def recolour(images: np.ndarray, targets: np.ndarray, max_shift: float) -> np.ndarray:
    """Move each image's colour towards its target: a bounded palette transfer in L*a*b*.

    Every product pixel of image i is shifted by the same ``delta_i = target_i -
    dominant_colour(image_i)``, its length capped at ``max_shift`` (CIE76 units), which keeps
    shading and texture; the white background is left alone, and pixels at its edge take part
    of the shift (``product_weight``). uint8 [N, H, W, 3] -> same; ``max_shift=0`` returns the
    images unchanged.
    """
    images = np.asarray(images)
    if max_shift <= 0:
        return images.copy()
    out = images.copy()
    for i in range(len(images)):
        lab = srgb_to_lab(images[i])
        delta = np.asarray(targets[i], np.float64) - _dominant(lab, foreground(lab))
        norm = float(np.linalg.norm(delta))
        if norm > max_shift:
            delta *= max_shift / norm
        w = product_weight(lab)
        moved = w > 0
        shifted = lab[moved] + w[moved][:, None] * delta
        out[i][moved] = np.clip(np.round(lab_to_srgb(shifted)), 0, 255).astype(np.uint8)
    return out


# --- catalogue nearest neighbours ----------------------------------------------------


def nearest(index_latents: np.ndarray, index_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the ``k`` catalogue items nearest to each query latent, nearest first: int64 [count, k].

    Brute force, squared Euclidean distance (L2) in float64; ties go to the earlier index
    row (stable sort), so the answer is deterministic.

    Why L2 and not cosine: the VAE's KL term ties the latent space to an isotropic
    N(0, I), so Euclidean distance is its natural metric, and the norm carries meaning
    (distance from the average product: strong colours, unusual shapes), which cosine
    throws away. Latent dimensions the VAE does not use hold ~0 in every catalogue
    mean; a sampled query's noise there adds the same amount to every distance, so it
    does not change the ranking under L2 (under cosine it would). At a few thousand
    items a [count, M] distance matrix costs microseconds; a library index (FAISS,
    hnswlib) only pays off from ~10^5 items.
    """
    x = np.asarray(index_latents, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    ids = np.asarray(index_ids)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        raise ValueError(f"index [M, L] and queries [count, L] must share L, got {x.shape} and {q.shape}")
    if ids.shape != (x.shape[0],):
        raise ValueError(f"index_ids must be [M] = [{x.shape[0]}], got {ids.shape}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in 1..{x.shape[0]} (the index size), got {k}")
    d2 = (q * q).sum(1)[:, None] - 2.0 * q @ x.T + (x * x).sum(1)[None, :]
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return ids[order].astype(np.int64)


@dataclass(frozen=True)
class Catalogue:
    """The catalogue index built at training time (``training.vae``)."""

    latents: np.ndarray  # float32 [M, L]: posterior means of the train-split photos
    ids: np.ndarray  # int64 [M]: styles.csv ids
    class_ids: np.ndarray  # int32 [M]: article type, index into class_names
    class_names: tuple[str, ...]
    metadata: dict[str, str]

    def nearest(self, queries: np.ndarray, k: int) -> np.ndarray:
        return nearest(self.latents, self.ids, queries, k)


def load_catalogue(path: str | Path) -> Catalogue:
    """Read ``checkpoints/personalize_catalogue.safetensors`` without torch (safetensors.numpy)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
    return Catalogue(
        latents=tensors["latents"].astype(np.float32),
        ids=tensors["ids"].astype(np.int64),
        class_ids=tensors["class_ids"].astype(np.int32),
        class_names=tuple(json.loads(meta.get("class_names", "[]"))),
        metadata=meta,
    )
