"""The personalisation maths the ``personalize`` ensemble runs between encoder and decoder (numpy only).

A shopper's history of N product photos is encoded into N diagonal Gaussian posteriors
``q_i = N(mu_i, diag(exp(logvar_i)))``. The server

1. checks the request (``check_history``, ``check_count``, ``check_weights``, ``check_seed``),
2. combines the posteriors into one Gaussian (``aggregate``),
3. draws ``count`` latents around it (``sample``), which the decoder turns into images,
4. optionally finds the nearest catalogue items to each latent (``nearest``).

``request_latents`` does 1-3 for one request in one call.

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
) -> np.ndarray:
    """One shopper's request, end to end: validate, ``aggregate``, ``sample`` -> float32 [count, L].

    ``count`` and ``seed`` may be Triton's [1] arrays; bad values raise ``RequestError``.
    """
    n = np.asarray(mu).shape[0]
    check_history(n)
    pi = check_weights(weights, n)
    count, seed = check_count(count), check_seed(seed)
    return sample(*aggregate(mu, logvar, pi), count, seed, temperature)


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
