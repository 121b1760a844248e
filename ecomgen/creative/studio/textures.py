"""Procedural backgrounds: studio sweeps and gradients, materials (wood, marble, linen, concrete, paper).

Everything is float32 RGB in [0, 1], generated deterministically from a seed at a reduced working
resolution and upsampled by the caller: these are smooth, low-frequency images, so generating them at
full 2048 px would only cost time. A fine full-resolution grain (``add_grain``) is added afterwards to
hide upsampling softness and 8-bit banding in the gradients.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

_GRAIN_TILE = 256


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``key`` (Python's ``hash`` is salted per process)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def hex_rgb(colour: str) -> NDArray[np.float32]:
    """``#rrggbb`` -> float32 RGB in [0, 1]."""
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return np.array([int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4)], np.float32)


def value_noise(h: int, w: int, cell: float, rng: np.random.Generator) -> F32:
    """Smooth noise with features about ``cell`` px wide: a random grid upsampled bicubically."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 3), max(2, int(np.ceil(w / cell)) + 3)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    o = int(cell)  # skip the first cell: bicubic edges are clamped
    return np.ascontiguousarray(big[o : o + h, o : o + w])


def fbm(h: int, w: int, cell: float, rng: np.random.Generator, octaves: int = 4, gain: float = 0.5) -> F32:
    """Fractal (multi-octave) value noise, normalised to zero mean and unit standard deviation."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        if cell < 1.5:
            break
        out += amp * value_noise(h, w, cell, rng)
        cell /= 2.0
        amp *= gain
    out -= out.mean()
    return out / (out.std() + 1e-6)


def smoothstep(e0: float, e1: float, x: F32) -> F32:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _grain_tile() -> F32:
    rng = np.random.default_rng(1234)
    n = rng.standard_normal((_GRAIN_TILE, _GRAIN_TILE)).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(n, (0, 0), 0.6), np.float32)


_TILE = _grain_tile()


def add_grain(img: F32, amount: float, seed: int = 0) -> F32:
    """Add a fine luminance grain (std ``amount``) at full resolution from one tiled noise block."""
    h, w = img.shape[:2]
    off = seed % _GRAIN_TILE
    reps = (h + off) // _GRAIN_TILE + 1, (w + off) // _GRAIN_TILE + 1
    g = np.tile(_TILE, reps)[off : off + h, off : off + w]
    g *= np.float32(amount / (_TILE.std() + 1e-6))
    img += g[..., None]
    return img


def _lerp(a: NDArray[np.float32], b: NDArray[np.float32], t: F32) -> F32:
    return a + (b - a) * t[..., None]


# ---- studio -------------------------------------------------------------------------------


def sweep(
    h: int,
    w: int,
    *,
    wall_top: str,
    wall: str,
    floor: str,
    floor_near: str,
    floor_y: float,
    cove: float,
    glow: float,
    glow_x: float,
    vignette: float,
) -> F32:
    """A cyclorama: a wall that curves (the cove) into a floor at ``floor_y``, lit by a soft glow."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    wall_col = _lerp(hex_rgb(wall_top), hex_rgb(wall), smoothstep(0.0, floor_y, y))
    floor_col = _lerp(hex_rgb(floor), hex_rgb(floor_near), smoothstep(floor_y, 1.0, y))
    t = smoothstep(floor_y - cove / 2, floor_y + cove / 2, y)
    col = wall_col + (floor_col - wall_col) * t[:, None]  # (h, 3): the profile down the sweep
    img = np.broadcast_to(col[:, None, :], (h, w, 3)).astype(np.float32)
    aspect = w / h
    dx = (x[None, :] - glow_x) * aspect
    dy = y[:, None] - (floor_y - 0.05)
    r2 = dx * dx / 0.35 + dy * dy / 0.25
    light = 1.0 + glow * np.exp(-r2 / 0.5) - vignette * np.clip(r2, 0, 4) / 4
    img = img * light[..., None]
    return img.astype(np.float32)


def gradient(
    h: int, w: int, *, colour_a: str, colour_b: str, angle: float, floor: str, floor_y: float, cove: float
) -> F32:
    """A two-colour diagonal gradient wall meeting a plain floor at ``floor_y``."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    th = np.deg2rad(angle)
    t = np.clip(0.5 + (x[None, :] - 0.5) * np.cos(th) * (w / h) + (y[:, None] - 0.5) * np.sin(th), 0, 1)
    wall = _lerp(hex_rgb(colour_a), hex_rgb(colour_b), smoothstep(0.0, 1.0, t.astype(np.float32)))
    f = hex_rgb(floor)
    fl = f[None, None, :] * (0.92 + 0.08 * smoothstep(floor_y, 1.0, y))[:, None, None]
    m = smoothstep(floor_y - cove / 2, floor_y + cove / 2, y)[:, None, None]
    return (wall * (1 - m) + fl * m).astype(np.float32)


# ---- materials (top-down, texture space) ------------------------------------------------


def wood(h: int, w: int, rng: np.random.Generator, *, tone: str, plank: float, contrast: float = 1.0) -> F32:
    """Planks running along x, ``plank`` px wide: fine wavy grain lines, streaks, seams and butt joints."""
    base = hex_rgb(tone)
    y = np.arange(h, dtype=np.float32)[:, None]
    idx = (y // plank).astype(np.int32)
    n_planks = int(h // plank) + 2
    bright = rng.normal(0, 0.045, n_planks).astype(np.float32)
    warmth = rng.normal(0, 0.02, n_planks).astype(np.float32)
    local = (y - idx * plank) / plank
    # Grain: ~12 growth lines across a plank, bent by noise that is long along the plank.
    stretch = 10
    bend = cv2.resize(
        fbm(h, max(8, w // stretch), plank * 0.5, rng, 3), (w, h), interpolation=cv2.INTER_CUBIC
    )
    lines_per_plank = rng.uniform(9, 15, n_planks).astype(np.float32)[idx]
    phase = rng.uniform(0, 1, n_planks).astype(np.float32)[idx]
    g = local * lines_per_plank + 1.4 * bend + phase
    late = (0.5 + 0.5 * np.cos(2 * np.pi * g)) ** 6  # thin dark latewood lines
    fine = cv2.resize(fbm(h, max(8, w // 30), 2.0, rng, 2), (w, h), interpolation=cv2.INTER_LINEAR)
    shade = (1.0 + bright[idx]) * (1.0 - contrast * (0.13 * late - 0.035 * fine))
    img = base[None, None, :] * shade[..., None]
    img[..., 0] *= 1.0 + warmth[idx[:, 0]][:, None]
    img[..., 2] *= 1.0 - warmth[idx[:, 0]][:, None]
    # Seams between planks and staggered butt joints.
    seam = np.exp(-((np.minimum(local, 1 - local) * plank) ** 2) / 1.0)
    x = np.arange(w, dtype=np.float32)[None, :]
    joint_len = max(w * 0.8, plank * 6)
    joint_off = rng.uniform(0, joint_len, n_planks).astype(np.float32)[idx]
    jx = np.mod(x + joint_off, joint_len)
    joint = np.exp(-(np.minimum(jx, joint_len - jx) ** 2) / 1.0)
    img *= (1.0 - 0.4 * np.maximum(seam, joint))[..., None]
    return img.astype(np.float32)


def marble(h: int, w: int, rng: np.random.Generator, *, tone: str, vein: str, scale: float) -> F32:
    """White marble: a cloudy base with long, soft, branching grey veins.

    Veins are the level lines of a ramp bent by smooth noise; the noise gain is kept low so that its
    gradient stays below the ramp's, which keeps veins long instead of closing into contour loops.
    """
    base = hex_rgb(tone)
    vc = hex_rgb(vein)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0.35, 0.75)
    out = np.zeros((h, w), np.float32)
    for freq, amp, width, strength, gain in ((1.0, 0.38, 0.045, 0.7, 0.4), (2.3, 0.34, 0.03, 0.35, 0.45)):
        turb = fbm(h, w, scale * 1.2, rng, 5, gain)
        ramp = (x * np.cos(ang) + y * np.sin(ang)) / scale
        s_ = np.sin(np.pi * (ramp * freq + amp * turb))
        s2 = s_ * s_
        thick = width * np.exp(0.5 * fbm(h, w, scale * 0.8, rng, 2))
        fade = np.clip(0.5 + 0.5 * fbm(h, w, scale * 1.5, rng, 3), 0, 1)
        vein_map = np.exp(-s2 / thick**2) + 0.12 * np.exp(-s2 / (4 * thick) ** 2)  # core + haze
        out = np.maximum(out, strength * fade * vein_map)
        ang += rng.uniform(-0.6, 0.6)
    out = np.asarray(cv2.GaussianBlur(np.clip(out, 0, 0.85), (0, 0), 0.8), np.float32)
    cloud = fbm(h, w, scale * 1.5, rng, 4)
    img = base[None, None, :] * (1.0 + 0.015 * cloud)[..., None]
    img = img * (1 - out[..., None]) + vc[None, None, :] * out[..., None]
    return img.astype(np.float32)


def linen(h: int, w: int, rng: np.random.Generator, *, tone: str, pitch: float) -> F32:
    """A plain weave: round over/under threads, slight thread irregularity, slubs, faint wrinkles."""
    base = hex_rgb(tone)
    rows = int(h / pitch) + 2
    cols = int(w / pitch) + 2
    r_thread = rng.normal(0, 1, rows).astype(np.float32)
    c_thread = rng.normal(0, 1, cols).astype(np.float32)
    yy = np.arange(h, dtype=np.float32) / pitch
    xx = np.arange(w, dtype=np.float32) / pitch
    yi = yy.astype(np.int32)
    xi = xx.astype(np.int32)
    ry = np.sin(np.pi * (yy % 1.0)) ** 0.8
    cx = np.sin(np.pi * (xx % 1.0)) ** 0.8
    checker = ((yi[:, None] + xi[None, :]) % 2).astype(np.float32)
    weave = checker * ry[:, None] + (1 - checker) * cx[None, :]
    # Slubs: short thick stretches along a thread, from noise along x gated per row.
    slub = np.clip(fbm(h, w, pitch * 8, rng, 2) - 1.6, 0, None) * (rng.random(rows) < 0.25)[yi][:, None]
    thread = checker * r_thread[yi][:, None] + (1 - checker) * c_thread[xi][None, :]
    wrinkle = fbm(h, w, max(h, w) / 4, rng, 3)
    shade = 0.9 + 0.1 * weave + 0.025 * thread - 0.05 * slub + 0.015 * wrinkle
    return (base[None, None, :] * shade[..., None]).astype(np.float32)


def concrete(h: int, w: int, rng: np.random.Generator, *, tone: str, scale: float) -> F32:
    """Cast concrete: mottled multi-octave noise, a fine aggregate and small air pits."""
    base = hex_rgb(tone)
    mottle = fbm(h, w, scale, rng, 5, 0.6)
    fine = fbm(h, w, 3.0, rng, 2)
    shade = 1.0 + 0.055 * mottle + 0.02 * fine
    pits = np.zeros((h, w), np.float32)
    n = int(h * w / 2500)
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    rad = rng.uniform(0.6, 2.2, n)
    for yy, xx, rr in zip(ys, xs, rad, strict=True):
        cv2.circle(pits, (int(xx), int(yy)), max(1, round(float(rr))), (1.0,), -1, lineType=cv2.LINE_AA)
    pits = np.asarray(cv2.GaussianBlur(pits, (0, 0), 1.0), np.float32)
    shade *= 1.0 - 0.22 * pits
    return (base[None, None, :] * shade[..., None]).astype(np.float32)


def paper(h: int, w: int, rng: np.random.Generator, *, tone: str) -> F32:
    """Heavy paper: faint fibres (thin anisotropic noise) on a slightly uneven surface."""
    base = hex_rgb(tone)
    fib = rng.standard_normal((h, w)).astype(np.float32)
    fib = cv2.GaussianBlur(fib, (0, 0), sigmaX=2.5, sigmaY=0.6) + cv2.GaussianBlur(
        fib, (0, 0), sigmaX=0.6, sigmaY=2.5
    )
    fib /= fib.std() + 1e-6
    mottle = fbm(h, w, max(h, w) / 4, rng, 4)
    shade = 1.0 + 0.012 * fib + 0.015 * mottle
    return (base[None, None, :] * shade[..., None]).astype(np.float32)


# Generation resolution per material, relative to the requested size: only linen's weave needs every
# pixel; the others are smooth at that scale and are upsampled (fine grain is added at full size).
_DETAIL = {"wood": 0.5, "marble": 0.5, "linen": 1.0, "concrete": 0.5, "paper": 0.5}


def material(
    name: str, h: int, w: int, rng: np.random.Generator, params: dict[str, object], unit: float
) -> F32:
    """Dispatch by material name; ``unit`` is one texture pixel's size relative to the working pixel."""
    if name not in _DETAIL:
        raise ValueError(f"unknown material {name!r}")
    k = _DETAIL[name]
    gh, gw, u = max(8, round(h * k)), max(8, round(w * k)), unit * k
    tone = str(params["tone"])
    if name == "wood":
        img = wood(gh, gw, rng, tone=tone, plank=float(params.get("plank", 0.16)) * u)  # type: ignore[arg-type]
    elif name == "marble":
        img = marble(gh, gw, rng, tone=tone, vein=str(params.get("vein", "#8a8a90")), scale=0.35 * u)
    elif name == "linen":
        img = linen(gh, gw, rng, tone=tone, pitch=max(1.6, float(params.get("pitch", 0.006)) * u))  # type: ignore[arg-type]
    elif name == "concrete":
        img = concrete(gh, gw, rng, tone=tone, scale=0.25 * u)
    else:
        img = paper(gh, gw, rng, tone=tone)
    if (gh, gw) == (h, w):
        return img
    return np.asarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)
