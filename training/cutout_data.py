"""Data for the product cut-out network: objects with masks, backgrounds, composites.

Objects, two sources:

* the VITON garment photos (``<root>/<split>/cloth``) and their masks
  (``<root>/<split>/cloth-mask``, L JPEGs thresholded at 128). Training reads only ``train``;
  the evaluation reads ``test``;
* the Fashion Product photos (``../shared/data/fashion-products``: 60x80 shop photos of shoes,
  bags, watches, sunglasses, shirts, jeans ..., mostly on a plain near-white backdrop) with
  masks *derived* from that backdrop (:func:`derive_product_mask`: the border's colour, a flood
  fill from the border within a Lab tolerance, closing, holes filled) and kept only when they
  pass a quality filter (:func:`mask_passes`: plain backdrop, area, solidity, border contact,
  stable under a change of tolerance). They are split by the project's fixed rule on the image
  id (``training.data.is_heldout``: sha256 of the id, 20% held out, the same split every
  generator uses); training reads only the ``train`` ids, the evaluation only the held-out ones.

Each source is decoded once and cached as uint8 ``.npy`` under ``build/cutout_cache/``
(git-ignored). The object colours of the edge band are "decontaminated" at load time (filled
in from the interior), so a composite has no white halo that would tell the network "an edge
is where white starts".

Backgrounds (:class:`Backgrounds`), each drawn at the canvas size:

* ``white``: plain white / near-white, sometimes a faint gradient; also the original photo
  itself on its own studio white (so the white marketplace case stays excellent);
* procedural surfaces: gradients, fractal noise, wood, marble, fabric weaves, concrete,
  stripes and coloured studio sweeps with a floor line (``TRAIN_KINDS``); the evaluation
  adds kinds training never draws (``EVAL_ONLY_KINDS``: floor tiles, terrazzo) and always
  draws from a disjoint seed stream (``np.random.default_rng([EVAL_TAG, i])``);
* photographs of real surfaces and scenes from Debian wallpaper packages (not committed; read
  from the system paths when installed; without them the procedural kinds stand in)::

      apt-get install -y --no-install-recommends plasma-workspace-wallpapers \\
          lomiri-wallpapers mate-backgrounds mypaint-data-extras

  ``PHOTO_NAMES`` lists the photographs used (renders and illustrations are left out). The list
  is sorted by path and split by a fixed rule: every 4th photo (index % 4 == 3) is reserved for
  the evaluation's unseen backgrounds, the rest are training backgrounds;
* fabric close-ups: zoomed-in crops from the inside of other training garments (surfaces).
  Whole product photos are never a background: that taught "a product photo is background".

Composites (:func:`composite`): the object is placed with scale, aspect, small rotation and
position jitter (sometimes cut by the border), a cast shadow (blurred, offset, sheared) and a
contact shadow multiply the surface, then colour jitter, noise, blur and JPEG re-encoding.
The small product photos are upsampled by the placement (bilinear) to 25-95% of the canvas,
or stretched whole over it as serving does. The target is the warped mask (soft at the edges
from the bilinear warp).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from training.paths import BUILD_DIR, SHARED_DATA

DEFAULT_VITON_DIR = SHARED_DATA / "viton"
CACHE_DIR = BUILD_DIR / "cutout_cache"
OBJECT_HW = (256, 192)  # VITON's native size; other sizes are resized to it
MASK_THRESHOLD = 128
TRAIN_TAG, EVAL_TAG = 0, 1  # first entropy word of the background seed streams: disjoint by construction
TRAIN_KINDS = ("gradient", "noise", "wood", "marble", "fabric", "concrete", "stripes", "sweep")
EVAL_ONLY_KINDS = ("tiles", "terrazzo")
EVAL_KINDS = (*TRAIN_KINDS, *EVAL_ONLY_KINDS)
PHOTO_SHORT_SIDE = 384  # photos are cached at this short side; crops are resized to the canvas
DEFAULT_PRODUCTS_DIR = SHARED_DATA / "fashion-products"
PRODUCT_HW = (80, 60)  # the Fashion Product photos' native size; the odd ones are resized to it
BACKGROUND_SOURCES = ("procedural", "photo", "fabric")  # what a textured background can be

# Photographs (not renders) shipped by the Debian packages named in the module docstring.
PLASMA = "/usr/share/wallpapers/{}/contents/images"
PHOTO_NAMES: tuple[str, ...] = (
    *(
        PLASMA.format(n)
        for n in (
            "Autumn",
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
        )
    ),  # plasma-workspace-wallpapers: a directory of sizes each
    *(
        f"/usr/share/backgrounds/{n}.jpg"
        for n in (
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Kleiber_by_Lukas_Baubkus",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "Wine_by_Jakkub_Mede",
            "aitzgorri_by_Aitzol_Berasategi",
            "analogpattern_by_Peter_Nerlich",
            "free_by_Peter_Nerlich",
            "friends_by_Aitzol_Berasategi",
            "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ),  # lomiri-wallpapers-16.04 (pulled in by lomiri-wallpapers)
    *(
        f"/usr/share/backgrounds/mate/nature/{n}.jpg"
        for n in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ),  # mate-backgrounds
    *(
        f"/usr/share/mypaint/backgrounds/{n}.png"
        for n in (
            "mrmamurk/mamurk_a_1",
            "mrmamurk/mamurk_a_2",
            "mrmamurk/mamurk_b_1",
            "mrmamurk/mamurk_c_3",
            "mrmamurk/mamurk_e_1",
            "mrmamurk/mamurk_e_2",
            "mrmamurk/mamurk_f_1",
            "ramon/HR_Canvas 01",
            "ramon/HR_Canvas 02",
            "ramon/HR_Cork",
            "ramon/HR_DecoPaper",
            "ramon/HR_PastelPaper 01",
            "ramon/HR_PastelPaper 02",
            "ramon/HR_RoughPaper",
            "ramon/HR_SketchPaper 02",
            "ramon/HR_SketchPaper",
            "ramon/HR_WaterColor",
        )
    ),  # mypaint-data-extras: scanned papers, canvas, cork (surfaces)
)


# --- objects (VITON garments + masks) ----------------------------------------------


@dataclass
class Objects:
    """uint8 images N x H x W x 3 (edge colours decontaminated), masks N x H x W in {0, 255}."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    keep: np.ndarray | None = None  # indices fit to train on (see clean_indices); None: all

    def __len__(self) -> int:
        return len(self.names)

    def usable(self) -> np.ndarray:
        return np.arange(len(self)) if self.keep is None else self.keep


def list_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(cloth, cloth-mask) paths of one split, sorted by name; only names present in both."""
    cloth_dir, mask_dir = Path(root) / split / "cloth", Path(root) / split / "cloth-mask"
    if not cloth_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{cloth_dir} and {mask_dir} expected (the VITON / CP-VTON layout)")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    pairs = [(p, masks[p.stem]) for p in sorted(cloth_dir.iterdir()) if p.stem in masks]
    if not pairs:
        raise FileNotFoundError(f"no cloth / cloth-mask pairs under {Path(root) / split}")
    return pairs


def read_rgb(path: Path, hw: tuple[int, int] = OBJECT_HW) -> np.ndarray:
    with Image.open(path) as f:
        im = f.convert("RGB")
    if im.size != (hw[1], hw[0]):
        im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def read_mask(path: Path, hw: tuple[int, int] = OBJECT_HW) -> np.ndarray:
    """The JPEG mask thresholded at 128: uint8 {0, 255}."""
    with Image.open(path) as f:
        im = f.convert("L")
    if im.size != (hw[1], hw[0]):
        im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.where(np.asarray(im) >= MASK_THRESHOLD, 255, 0).astype(np.uint8)


def decontaminate(rgb: np.ndarray, mask: np.ndarray, band: int = 2, sigma: float = 3.0) -> np.ndarray:
    """Replace the colours of the outer ``band`` px of the object (and beyond) by interior colours.

    VITON photos are antialiased against white; pasted elsewhere those pixels would draw a light
    halo. A normalised Gaussian of the eroded interior extends its colours outward.
    """
    inner = cv2.erode(mask, np.ones((2 * band + 1, 2 * band + 1), np.uint8)) > 0
    if not inner.any():
        return rgb
    w = inner.astype(np.float32)
    num = cv2.GaussianBlur(rgb.astype(np.float32) * w[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)[..., None]
    ext = num / np.maximum(den, 1e-4)
    out = np.where((inner[..., None]) | (den < 1e-3), rgb.astype(np.float32), ext)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _cache_key(pairs: list[tuple[Path, Path]], hw: tuple[int, int]) -> str:
    h = hashlib.sha256(f"v2 {hw}".encode())
    for c, m in pairs:
        h.update(f"{c}|{m}|{c.stat().st_size}|{m.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def load_objects(
    root: Path,
    split: str,
    limit: int | None = None,
    cache_dir: Path | None = CACHE_DIR,
    progress: bool = True,
    clean_edges: bool = True,
) -> Objects:
    """The garments and masks of ``split`` (sorted by name, the first ``limit``), cached as .npy."""
    pairs = list_pairs(root, split)[:limit]
    names = [c.name for c, _ in pairs]
    key = _cache_key(pairs, OBJECT_HW) + ("d" if clean_edges else "r")
    if cache_dir is not None:
        img_path, mask_path = Path(cache_dir) / f"{key}_rgb.npy", Path(cache_dir) / f"{key}_mask.npy"
        if img_path.exists() and mask_path.exists():
            # Memory-mapped: the page cache is shared between runs and the arrays load instantly.
            return Objects(np.load(img_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r"), names)
    images = np.empty((len(pairs), *OBJECT_HW, 3), np.uint8)
    masks = np.empty((len(pairs), *OBJECT_HW), np.uint8)
    for i, (c, m) in enumerate(tqdm(pairs, desc=f"decode {split}", disable=not progress)):
        masks[i] = read_mask(m)
        rgb = read_rgb(c)
        images[i] = decontaminate(rgb, fill_holes(masks[i])) if clean_edges else rgb
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.save(img_path, images)
        np.save(mask_path, masks)
    return Objects(images, masks, names)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not connected to the image border filled."""
    pad = np.pad((mask == 0).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(pad, None, (0, 0), (2,))
    return np.where(pad[1:-1, 1:-1] == 1, np.uint8(255), mask)


def mask_quality(mask: np.ndarray) -> tuple[float, float]:
    """(solidity: area / convex-hull area, holes: enclosed background area / mask area)."""
    fg = (mask > 0).astype(np.uint8)
    area = float(fg.sum())
    if area == 0:
        return 0.0, 0.0
    holes = float((fill_holes(mask) > 0).sum()) - area
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    return area / max(float(cv2.contourArea(hull)), 1.0), holes / area


def clean_indices(masks: np.ndarray, min_solidity: float = 0.75, min_area: float = 0.02) -> np.ndarray:
    """Items whose mask is plausible: some VITON cloth-masks are near-empty or shredded where the
    garment is white or pink (their threshold failed), so these are left out of training."""
    keep = []
    for i in range(len(masks)):
        solidity, _ = mask_quality(masks[i])
        if solidity >= min_solidity and (masks[i] > 0).mean() >= min_area:
            keep.append(i)
    return np.asarray(keep, np.int64)


def fake_objects(n: int = 8, seed: int = 0) -> Objects:
    """Random ellipses and blobs with textured colours (for tests without data)."""
    rng = np.random.default_rng(seed)
    h, w = OBJECT_HW
    images = np.full((n, h, w, 3), 255, np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        centre = (int(rng.integers(60, w - 60)), int(rng.integers(80, h - 80)))
        axes = (int(rng.integers(30, 80)), int(rng.integers(40, 110)))
        cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, (255,), -1)
        colour = rng.integers(0, 256, 3)
        tex = (fractal_noise(rng, (h, w), 3) * 80 - 40)[..., None]
        fill = np.clip(colour[None, None, :] + tex, 0, 255).astype(np.uint8)
        images[i] = np.where(masks[i][..., None] > 0, fill, images[i])
    return Objects(images, masks, [f"fake_{i:03d}.jpg" for i in range(n)])


# --- procedural textures ----------------------------------------------------------


def fractal_noise(
    rng: np.random.Generator, hw: tuple[int, int], octaves: int = 4, base: int = 4, stretch: float = 1.0
) -> np.ndarray:
    """float32 H x W in [0, 1]: value noise summed over octaves; ``stretch`` > 1 elongates along x."""
    h, w = hw
    out = np.zeros(hw, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = base * 2**o
        small = rng.random((max(2, n), max(2, int(n / stretch)))).astype(np.float32)
        out += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def random_colour(rng: np.random.Generator, palette: str = "any") -> np.ndarray:
    """float32 RGB in [0, 1] from a loose palette."""
    if palette == "wood":
        base = np.array([0.55, 0.36, 0.2]) * rng.uniform(0.5, 1.5)
        return np.clip(base + rng.normal(0, 0.05, 3), 0, 1).astype(np.float32)
    if palette == "stone":
        g = rng.uniform(0.3, 0.9)
        return np.clip(g + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255)]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255
    return rgb


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _gradient(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, b = random_colour(rng), random_colour(rng)
    if rng.random() < 0.5:
        th = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(th) + yy * np.sin(th)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    out = _mix(a, b, t)
    return out


def _noise(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    t = fractal_noise(rng, hw, int(rng.integers(3, 6)), int(rng.integers(2, 8)))
    out = _mix(random_colour(rng), random_colour(rng), t)
    return out


def _wood(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    grain = fractal_noise(rng, hw, 4, int(rng.integers(2, 5)), stretch=rng.uniform(4, 10))
    freq = rng.uniform(10, 40)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (yy * freq + grain * rng.uniform(2, 6)))
    t = t ** rng.uniform(0.5, 3)
    dark = random_colour(rng, "wood")
    out = _mix(np.clip(dark * rng.uniform(1.2, 1.8), 0, 1), dark, t)
    out *= (0.9 + 0.2 * fractal_noise(rng, hw, 3, 16, stretch=8))[..., None]
    if rng.random() < 0.5:  # planks
        plank = rng.uniform(0.15, 0.4)
        out[(yy % plank) < 0.006] *= 0.5
    out = _rotate(out, float(rng.choice([0, 90]) + rng.uniform(-10, 10)))
    return out


def _marble(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    turb = fractal_noise(rng, hw, 5, int(rng.integers(2, 5)))
    th = rng.uniform(0, np.pi)
    t = np.abs(np.sin(2 * np.pi * ((xx * np.cos(th) + yy * np.sin(th)) * rng.uniform(1, 4) + turb * 3)))
    veins = (1 - t) ** rng.uniform(6, 20)
    base = random_colour(rng, "stone")
    base = np.clip(base + 0.2, 0, 1) if rng.random() < 0.6 else base
    out = _mix(base, base * rng.uniform(0.2, 0.6), veins)
    return out


def _fabric(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = hw
    period = rng.uniform(3, 9)
    c = random_colour(rng)
    wx = 0.5 + 0.5 * np.sin(2 * np.pi * xx * max(h, w) / period)
    wy = 0.5 + 0.5 * np.sin(2 * np.pi * yy * max(h, w) / period)
    t = np.where((np.floor(xx * max(h, w) / period) + np.floor(yy * max(h, w) / period)) % 2 == 0, wx, wy)
    out = c[None, None, :] * (0.75 + 0.25 * t[..., None])
    out *= (0.85 + 0.3 * fractal_noise(rng, hw, 3, 8))[..., None]
    out = _rotate(out, float(rng.uniform(-45, 45)))
    return out


def _concrete(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    g = random_colour(rng, "stone")
    t = 0.6 * fractal_noise(rng, hw, 5, 4) + 0.4 * rng.random(hw).astype(np.float32)
    out = g[None, None, :] * (0.75 + 0.5 * t[..., None])
    spots = rng.random(hw) < 0.01
    out[spots] *= 0.6
    return out


def _stripes(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, b = random_colour(rng), random_colour(rng)
    period = rng.uniform(0.03, 0.25)
    th = rng.uniform(0, np.pi)
    t = ((xx * np.cos(th) + yy * np.sin(th)) / period) % 1.0 < rng.uniform(0.3, 0.7)
    out = _mix(a, b, t.astype(np.float32))
    out = cv2.GaussianBlur(out, (0, 0), 0.7)
    return out


def _sweep(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = hw
    wall, floor = random_colour(rng), random_colour(rng)
    if rng.random() < 0.5:
        floor = procedural(str(rng.choice(["wood", "concrete", "marble", "fabric"])), rng, hw)
    else:
        floor = np.broadcast_to(floor, (h, w, 3)).copy()
    line = rng.uniform(0.35, 0.8) * h / max(h, w)
    soft = rng.uniform(0.005, 0.08)
    t = np.clip((yy - line) / soft + 0.5, 0, 1)
    wall_img = wall[None, None, :] * (0.8 + 0.2 * (1 - yy / max(line, 1e-3)))[..., None].clip(0.8, 1.0)
    out = wall_img * (1 - t[..., None]) + floor * t[..., None]
    return out


def _tiles(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    size = rng.uniform(0.08, 0.3)
    grout = rng.uniform(0.004, 0.012)
    a = random_colour(rng, "stone" if rng.random() < 0.5 else "any")
    ix, iy = np.floor(xx / size), np.floor(yy / size)
    jitter = rng.uniform(0.85, 1.15, (int(1 / size) + 2, int(1 / size) + 2)).astype(np.float32)
    out = a[None, None, :] * jitter[iy.astype(int), ix.astype(int)][..., None]
    out *= (0.9 + 0.2 * fractal_noise(rng, hw, 4, 8))[..., None]
    edge = ((xx % size) < grout) | ((yy % size) < grout)
    out[edge] = random_colour(rng, "stone") * 0.8
    return out


def _terrazzo(rng: np.random.Generator, hw: tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = hw
    base = random_colour(rng, "stone")
    out = np.broadcast_to(base, (h, w, 3)).copy()
    for _ in range(int(rng.integers(80, 300))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        cv2.ellipse(out, c, ax, float(rng.uniform(0, 180)), 0, 360, random_colour(rng).tolist(), -1)
    return out


Surface = Callable[[np.random.Generator, tuple[int, int], np.ndarray, np.ndarray], np.ndarray]
_KINDS: dict[str, Surface] = {
    "gradient": _gradient,
    "noise": _noise,
    "wood": _wood,
    "marble": _marble,
    "fabric": _fabric,
    "concrete": _concrete,
    "stripes": _stripes,
    "sweep": _sweep,
    "tiles": _tiles,
    "terrazzo": _terrazzo,
}


def procedural(kind: str, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """float32 H x W x 3 in [0, 1]: one procedural surface of ``kind``."""
    if kind not in _KINDS:
        raise KeyError(f"unknown background kind {kind!r}")
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h, w), xx / max(h, w)
    return np.clip(_KINDS[kind](rng, hw, yy, xx), 0, 1).astype(np.float32)


def near_white(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """A plain white or near-white studio background, sometimes with a faint gradient."""
    v = 1.0 if rng.random() < 0.4 else rng.uniform(0.9, 1.0)
    out = np.full((*hw, 3), v, np.float32) + rng.normal(0, 0.008, 3).astype(np.float32)
    if rng.random() < 0.35:
        yy = np.linspace(0, 1, hw[0], dtype=np.float32)[:, None, None]
        out = out - rng.uniform(0, 0.08) * (yy if rng.random() < 0.5 else 1 - yy)
    return np.clip(out, 0, 1)


# --- photographs and other products ------------------------------------------------


def _resolve_photo(name: str) -> Path | None:
    """A file, or for a plasma wallpaper directory its largest image no wider than 2560 px."""
    p = Path(name)
    if p.is_file():
        return p
    if p.is_dir():
        sizes = []
        for f in p.iterdir():
            try:
                w, h = (int(v) for v in f.stem.split("x"))
            except ValueError:
                continue
            sizes.append((w * h if w <= 2560 else 0, f))
        return max(sizes)[1] if sizes else None
    return None


def photo_split(names: Sequence[str] = PHOTO_NAMES) -> dict[str, list[Path]]:
    """The installed photographs, sorted by path: every 4th (index % 4 == 3) is ``eval``, else ``train``."""
    found = sorted(p for p in (_resolve_photo(n) for n in names) if p is not None)
    return {
        "train": [p for i, p in enumerate(found) if i % 4 != 3],
        "eval": [p for i, p in enumerate(found) if i % 4 == 3],
    }


def load_photo(
    path: Path, short_side: int = PHOTO_SHORT_SIDE, cache_dir: Path | None = CACHE_DIR
) -> np.ndarray:
    """uint8 RGB, resized so its short side is ``short_side`` (cached as .npy)."""
    key = hashlib.sha256(f"{path}|{path.stat().st_size}|{short_side}".encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"photo_{key}.npy" if cache_dir is not None else None
    if cached is not None and cached.exists():
        return np.load(cached)
    Image.MAX_IMAGE_PIXELS = 200_000_000  # the 5K wallpapers are trusted system files
    with Image.open(path) as f:
        f.draft("RGB", (short_side * 2, short_side * 2))
        im = f.convert("RGB")
    scale = short_side / min(im.size)
    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.BOX)
    arr = np.asarray(im, dtype=np.uint8)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, arr)
    return arr


def random_crop(photo: np.ndarray, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """float32 [0, 1]: a random crop (20-100% of the short side, aspect jittered), resized to ``hw``."""
    ph, pw = photo.shape[:2]
    side = rng.uniform(0.2, 1.0) * min(ph, pw)
    aspect = float(np.exp(rng.uniform(-0.3, 0.3))) * hw[1] / hw[0]
    ch, cw = min(ph, int(side / np.sqrt(aspect))), min(pw, int(side * np.sqrt(aspect)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y : y + ch, x : x + cw]
    interp = cv2.INTER_AREA if ch > hw[0] else cv2.INTER_LINEAR
    out = cv2.resize(crop, (hw[1], hw[0]), interpolation=interp).astype(np.float32) / 255
    return out[:, ::-1] if rng.random() < 0.5 else out


def fabric_closeup(objects: Objects, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """A zoomed-in crop from the inside of another garment (a fabric surface)."""
    usable = objects.usable()
    for _ in range(10):
        i = int(usable[rng.integers(len(usable))])
        ys, xs = np.nonzero(objects.masks[i][::4, ::4])
        if len(ys) < 20:
            continue
        side = int(rng.integers(24, 72))
        j = int(rng.integers(len(ys)))
        y0, x0 = max(0, ys[j] * 4 - side // 2), max(0, xs[j] * 4 - side // 2)
        crop = objects.images[i][y0 : y0 + side, x0 : x0 + side]
        if crop.shape[0] >= 8 and crop.shape[1] >= 8:
            return cv2.resize(crop, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    return procedural("fabric", rng, hw)


class Backgrounds:
    """Draws training (or evaluation) backgrounds at the canvas size, float32 [0, 1]."""

    def __init__(
        self,
        photos: list[np.ndarray],
        objects: Objects | None = None,
        kinds: Sequence[str] = TRAIN_KINDS,
    ) -> None:
        self.photos, self.objects, self.kinds = photos, objects, tuple(kinds)

    def sources(self) -> list[tuple[str, float]]:
        """(source, weight) of a textured background; absent sources drop out.

        Whole product photos are never a background (``BACKGROUND_SOURCES``): a shelf of other
        products' photos behind the object taught the network that product photos are background,
        and it then returned empty mattes for shops' own photos. Fabric close-ups (a zoomed crop
        inside another garment) are surfaces, not products, and stay.
        """
        out = [("procedural", 0.45)]
        if self.photos:
            out.append(("photo", 0.4))
        if self.objects is not None:
            out.append(("fabric", 0.15))
        return out

    def textured(self, rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, str]:
        names, weights = zip(*self.sources(), strict=True)
        p = np.asarray(weights) / sum(weights)
        source = str(rng.choice(names, p=p))
        if source == "photo":
            return random_crop(self.photos[int(rng.integers(len(self.photos)))], rng, hw), "photo"
        if source == "fabric":
            assert self.objects is not None
            return fabric_closeup(self.objects, rng, hw), "fabric"
        kind = str(rng.choice(self.kinds))
        return procedural(kind, rng, hw), kind


# --- compositing ------------------------------------------------------------------


def placement(
    mask: np.ndarray,
    rng: np.random.Generator,
    hw: tuple[int, int],
    border_cut_prob: float = 0.15,
    fill_range: tuple[float, float] = (0.4, 0.95),
) -> np.ndarray:
    """A 2x3 affine matrix from object coordinates to the canvas: scale, aspect, rotation, position.

    The object's long side covers ``fill_range`` (40-95%) of the canvas; some objects are pushed
    partly out of the frame, as crops of shop photos are.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        ys, xs = np.array([0, mask.shape[0] - 1]), np.array([0, mask.shape[1] - 1])
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    oh, ow = y1 - y0, x1 - x0
    h, w = hw
    aspect = float(np.exp(rng.uniform(-0.35, 0.35)))  # the serving resize stretches photos to square
    fill = rng.uniform(*fill_range)
    s = fill * min(h / (oh / np.sqrt(aspect)), w / (ow * np.sqrt(aspect)))
    sx, sy = s * np.sqrt(aspect), s / np.sqrt(aspect)
    angle = np.deg2rad(rng.uniform(-12, 12)) if rng.random() < 0.3 else 0.0
    nh, nw = oh * sy, ow * sx
    if rng.random() < border_cut_prob:
        cx = rng.uniform(-0.2, 1.2) * w
        cy = rng.uniform(-0.2, 1.2) * h
    else:
        cx = rng.uniform(min(nw / 2, w / 2), max(w - nw / 2, w / 2))
        cy = rng.uniform(min(nh / 2, h / 2), max(h - nh / 2, h / 2))
    c, si = np.cos(angle), np.sin(angle)
    rot = np.array([[c * sx, -si * sy], [si * sx, c * sy]])
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    t = np.array([cx, cy]) - rot @ centre
    return np.hstack([rot, t[:, None]]).astype(np.float32)


def cast_shadow(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft, offset, sheared shadow (float H x W, 0 = none) of the object's alpha."""
    h, w = alpha.shape
    ys = np.nonzero(alpha.max(axis=1) > 0.5)[0]
    base = float(ys.max()) if len(ys) else h / 2
    shear = rng.uniform(-0.6, 0.6)
    squash = rng.uniform(0.3, 1.0)
    # Pivot at the object's base line: points move sideways in proportion to their height.
    m = np.array(
        [
            [1.0, shear, -shear * base + rng.uniform(-0.06, 0.06) * w],
            [0.0, squash, base * (1 - squash) + rng.uniform(-0.02, 0.06) * h],
        ],
        np.float32,
    )
    sh = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(sh, (0, 0), rng.uniform(2, 12))


def contact_shadow(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tight dark band under the lowest object pixels."""
    h, w = alpha.shape
    ys = np.nonzero(alpha.max(axis=1) > 0.5)[0]
    if not len(ys):
        return np.zeros_like(alpha)
    base = float(ys.max())
    squash = rng.uniform(0.03, 0.12)
    m = np.array([[1.05, 0, -0.025 * w], [0, squash, base * (1 - squash) + rng.uniform(0, 3)]], np.float32)
    sh = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)
    return np.clip(cv2.GaussianBlur(sh, (0, 0), rng.uniform(1.5, 4)) * 2, 0, 1)


def jitter_colour(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """float32 [0, 1] RGB: brightness, contrast, saturation, hue, gamma and a white-balance cast."""
    out = img
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12) * strength) % 360
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength), 0, 1)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    gain = rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength)
    cast = 1 + rng.uniform(-0.05, 0.05, 3).astype(np.float32) * strength
    contrast = rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength)
    mean = float(out.mean())
    out = (out - mean) * contrast + mean
    out = np.clip(out * gain * cast[None, None, :], 0, 1)
    if rng.random() < 0.3:
        out = out ** rng.uniform(0.8, 1.25)
    return out.astype(np.float32)


def composite(
    fg: np.ndarray,
    alpha: np.ndarray,
    bg: np.ndarray,
    rng: np.random.Generator,
    shadow_prob: float = 0.6,
    contact_prob: float = 0.5,
) -> np.ndarray:
    """float32 [0, 1] image: ``fg`` over ``bg`` through ``alpha``; shadows multiply the surface only."""
    bg = bg.copy()
    if rng.random() < shadow_prob:
        bg *= 1 - rng.uniform(0.15, 0.55) * cast_shadow(alpha, rng)[..., None]
    if rng.random() < contact_prob:
        bg *= 1 - rng.uniform(0.25, 0.7) * contact_shadow(alpha, rng)[..., None]
    a = alpha[..., None]
    return fg * a + bg * (1 - a)


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 image after camera-ish degradations: blur, noise, JPEG."""
    if rng.random() < 0.15:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(0.005, 0.025), img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
        if ok:
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


@dataclass(frozen=True)
class CompositeConfig:
    white_prob: float = 0.28  # plain white / near-white backgrounds (half of them the original photo)
    original_prob: float = 0.5  # of the white ones: the VITON photo on its own studio white
    object_jitter_prob: float = 0.5
    # Fashion Product photos (when given): the share of samples, and how they are shown.
    product_prob: float = 0.45
    product_white_prob: float = 0.45  # on white: the photo itself on its own backdrop, or near-white
    product_original_prob: float = 0.6  # of the white ones: the photo itself ...
    full_frame_prob: float = 0.5  # ... of those: stretched whole over the canvas, as serving does
    product_fill: tuple[float, float] = (0.25, 0.95)  # placed: long side, of the canvas


def training_sample(
    objects: Objects,
    backgrounds: Backgrounds,
    rng: np.random.Generator,
    hw: tuple[int, int],
    raw: Objects | None = None,
    config: CompositeConfig = CompositeConfig(),
    products: Objects | None = None,
    products_raw: Objects | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """One (uint8 H x W x 3 image, float32 H x W alpha, background source) training sample.

    ``raw``: the same objects without edge decontamination (the original photos), used for the
    "original photo on its own white" case. ``products`` / ``products_raw``: Fashion Product
    photos with derived masks (decontaminated / as shot), drawn with ``config.product_prob``.
    """
    if products is not None and len(products.usable()) and rng.random() < config.product_prob:
        return product_sample(products, backgrounds, rng, hw, products_raw, config)
    usable = objects.usable()
    i = int(usable[rng.integers(len(usable))])
    # Enclosed holes in a garment mask are failures of VITON's threshold (white stripes, logos).
    mask = fill_holes(np.asarray(objects.masks[i]))
    m = placement(mask, rng, hw)
    alpha = cv2.warpAffine(mask.astype(np.float32) / 255, m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR)
    if rng.random() < config.white_prob:
        if raw is not None and rng.random() < config.original_prob:
            # The untouched studio photo, warped whole (its white background comes along).
            img = cv2.warpAffine(
                raw.images[i], m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255)
            ).astype(np.float32)
            img = jitter_colour(img / 255, rng, 0.3)
            source = "white-original"
        else:
            fg = cv2.warpAffine(objects.images[i], m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR)
            fg = fg.astype(np.float32) / 255
            if rng.random() < config.object_jitter_prob:
                fg = jitter_colour(fg, rng, 0.6)
            img = composite(fg, alpha, near_white(rng, hw), rng, shadow_prob=0.4, contact_prob=0.4)
            source = "white"
    else:
        fg = cv2.warpAffine(objects.images[i], m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR)
        fg = fg.astype(np.float32) / 255
        if rng.random() < config.object_jitter_prob:
            fg = jitter_colour(fg, rng, 1.0)
        bg, source = backgrounds.textured(rng, hw)
        if rng.random() < 0.5:
            bg = jitter_colour(bg, rng, 1.0)
        img = composite(fg, alpha, bg, rng)
        img = jitter_colour(img, rng, 0.4) if rng.random() < 0.5 else img
    if rng.random() < 0.5:
        img, alpha = img[:, ::-1], alpha[:, ::-1]
    return degrade(np.ascontiguousarray(img), rng), np.ascontiguousarray(alpha), source


def stretch_matrix(src_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine of ``cv2.resize`` from ``src_hw`` to ``hw`` (pixel centres aligned)."""
    sy, sx = hw[0] / src_hw[0], hw[1] / src_hw[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]], np.float32)


def product_sample(
    products: Objects,
    backgrounds: Backgrounds,
    rng: np.random.Generator,
    hw: tuple[int, int],
    raw: Objects | None = None,
    config: CompositeConfig = CompositeConfig(),
) -> tuple[np.ndarray, np.ndarray, str]:
    """One training sample from a Fashion Product photo and its derived mask (see
    :func:`training_sample`): the photo itself on its own backdrop (placed, or stretched whole as
    serving does), the product over near-white, or the product over a textured background at a
    random scale. The small photo is upsampled by the warp; degradations as for VITON."""
    usable = products.usable()
    i = int(usable[rng.integers(len(usable))])
    mask = np.asarray(products.masks[i])
    size = (hw[1], hw[0])
    u = rng.random()  # which of the three: the photo itself, over near-white, over a texture
    if raw is not None and u < config.product_white_prob * config.product_original_prob:
        if rng.random() < config.full_frame_prob:
            m, source = stretch_matrix((mask.shape[0], mask.shape[1]), hw), "product-full-frame"
        else:
            m, source = placement(mask, rng, hw, fill_range=config.product_fill), "product-original"
        # The backdrop is plain, so replicating the border extends it (and a product cut by the
        # border stays cut, in the photo and in its mask alike).
        img = cv2.warpAffine(raw.images[i], m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(
            mask.astype(np.float32) / 255, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        img = jitter_colour(img.astype(np.float32) / 255, rng, 0.3)
    else:
        m = placement(mask, rng, hw, fill_range=config.product_fill)
        alpha = cv2.warpAffine(mask.astype(np.float32) / 255, m, size, flags=cv2.INTER_LINEAR)
        fg = cv2.warpAffine(products.images[i], m, size, flags=cv2.INTER_LINEAR).astype(np.float32) / 255
        if rng.random() < config.object_jitter_prob:
            fg = jitter_colour(fg, rng, 0.6)
        if u < config.product_white_prob:
            img = composite(fg, alpha, near_white(rng, hw), rng, shadow_prob=0.4, contact_prob=0.4)
            source = "product-white"
        else:
            bg, kind = backgrounds.textured(rng, hw)
            if rng.random() < 0.5:
                bg = jitter_colour(bg, rng, 1.0)
            img = composite(fg, alpha, bg, rng)
            img = jitter_colour(img, rng, 0.4) if rng.random() < 0.5 else img
            source = f"product-{kind}"
    if rng.random() < 0.5:
        img, alpha = img[:, ::-1], alpha[:, ::-1]
    return degrade(np.ascontiguousarray(img), rng), np.ascontiguousarray(np.clip(alpha, 0, 1)), source


def eval_background(
    index: int, hw: tuple[int, int], photos: list[np.ndarray], kinds: Sequence[str] = EVAL_KINDS
) -> tuple[np.ndarray, str]:
    """The fixed unseen background of test item ``index``: even items a held-out photo (when any is
    installed), odd items a procedural surface; seeds from the evaluation stream (``EVAL_TAG``)."""
    rng = np.random.default_rng([EVAL_TAG, index])
    if photos and index % 2 == 0:
        return random_crop(photos[(index // 2) % len(photos)], rng, hw), "photo"
    kind = kinds[(index // 2) % len(kinds)]
    return procedural(kind, rng, hw), kind


def eval_composite(fg: np.ndarray, mask: np.ndarray, bg: np.ndarray, index: int) -> np.ndarray:
    """uint8: test garment ``fg`` (decontaminated) pasted in place over ``bg`` through its mask,
    with shadows (fixed seed per item), through the same :func:`composite` as training."""
    rng = np.random.default_rng([EVAL_TAG, index, 1])
    alpha = mask.astype(np.float32) / 255
    img = composite(fg.astype(np.float32) / 255, alpha, bg, rng)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


# --- product photos: masks derived from their plain backgrounds ---------------------


@dataclass(frozen=True)
class MaskRule:
    """How a Fashion Product photo's mask is derived from its plain backdrop, and which pass.

    Distances are CIE76 Delta E in CIE Lab (L in [0, 100]); areas are fractions of the image.
    """

    band: int = 2  # px of each side whose median colour is the backdrop colour
    tol: float = 9.0  # Delta E from the backdrop colour that still counts as backdrop
    noise_tol: float = 3.0  # the tolerance grows by this many times the band's own noise ...
    max_tol: float = 16.0  # ... up to this
    stability: tuple[float, float] = (0.6, 1.6)  # the mask is derived again at these x tolerance
    min_part: float = 0.1  # components smaller than this fraction of the largest are dropped
    min_see_through: float = 0.01  # enclosed holes at least this big may stay backdrop ...
    max_strap: int = 3  # ... when a strap at most this wide separates them from the outside
    # The quality filter (mask_passes):
    max_band_noise: float = 2.5  # Delta E spread of the band's backdrop pixels: a plain backdrop
    min_band_plain: float = 0.6  # of the band within the tolerance of the backdrop colour
    min_area: float = 0.04
    max_area: float = 0.9
    min_solidity: float = 0.5  # area / convex-hull area (a pair of shoes or sunglasses is ~0.6)
    max_border_touch: float = 0.3  # of the outermost pixel ring covered by the product
    min_stable: float = 0.9  # of the mask unchanged (beyond its 1 px edge) at both other tolerances


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """float32 CIE Lab (L in [0, 100]) of a uint8 RGB image."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def outer_ring(hw: tuple[int, int], width: int) -> np.ndarray:
    """bool H x W: the outermost ``width`` px of each side."""
    ring = np.zeros(hw, bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return ring


def _segment(dist: np.ndarray, tol: float, rule: MaskRule, plain: float) -> np.ndarray:
    """bool: the pixels beyond ``tol`` of the backdrop, closed by a 3x3 cross, with components
    under ``min_part`` of the largest dropped (specks) and its holes filled, except see-through
    ones (:func:`_see_through`, backdrop-like: median Delta E under ``plain``, the same at every
    tolerance). No opening: at 60x80 a sunglasses temple or a strap is one pixel wide."""
    # The product-coloured pixels; what they enclose is filled below (the flood from the border),
    # so that an enclosed backdrop-like region stays a hole that can be judged see-through.
    fg = (dist >= tol).astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cross)
    n, labels, cc, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 1:
        areas = cc[1:, cv2.CC_STAT_AREA]
        fg = np.isin(labels, 1 + np.nonzero(areas >= rule.min_part * areas.max())[0]).astype(np.uint8)
    filled = fill_holes(fg * 255) > 0
    holes = filled & (fg == 0)
    if holes.any():
        outside = ~filled
        n, labels, cc, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
        for k in range(1, n):
            if cc[k, cv2.CC_STAT_AREA] >= rule.min_see_through * dist.size:
                hole = labels == k
                if _see_through(hole, dist, plain, outside, rule.max_strap):
                    filled[hole] = False
    return filled


def _see_through(hole: np.ndarray, dist: np.ndarray, plain: float, outside: np.ndarray, strap: int) -> bool:
    """Whether an enclosed hole is the backdrop seen through the product (a handle or strap loop)
    rather than a light part of it (a white logo, a watch face, a shoe's stripes): it looks like
    the backdrop (median Delta E under ``plain``), has nothing of the product inside it (no islands:
    a watch's hands and numerals are), is open (a disc of radius ``strap`` fits inside: stripes
    do not) and only a thin band (``strap`` px) separates a good part of it from the outside."""
    if float(np.median(dist[hole])) >= plain:
        return False
    islands = int((fill_holes(hole.astype(np.uint8) * 255) > 0).sum() - hole.sum())
    if islands > 0.001 * hole.size:  # a few pixels are JPEG noise, not a watch's hands
        return False
    # Open, not a stripe: a white stripe on a shoe is as plain, but no wider than a few pixels.
    if float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3).max()) < strap:
        return False
    # The product pixels around the hole; 30% of them within ``strap`` px of the outside
    # make a strap (all of them would be too strict: a bag's body below its handle is thick).
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~hole
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * strap + 1, 2 * strap + 1))
    near = cv2.dilate(outside.astype(np.uint8), k) > 0
    return bool(ring.any()) and float(near[ring].mean()) >= 0.3


def derive_product_mask(rgb: np.ndarray, rule: MaskRule = MaskRule()) -> tuple[np.ndarray, dict[str, float]]:
    """(uint8 {0, 255} mask, quality stats) of a product photo on a plain backdrop.

    The backdrop colour is the median (Lab) of the border band; pixels within a tolerance of it
    (Delta E, widened by the band's own noise) and connected to the border are the backdrop, a
    flood fill from every border pixel at once. The rest is the product: closed by a 3x3 cross,
    components under ``min_part`` of the largest dropped (specks; a pair of shoes stays two),
    enclosed holes filled (white logos, watch faces) unless the backdrop is seen through a strap
    or handle loop (:func:`_see_through`). ``stable`` is the
    share of the mask that does not change, beyond its 1 px edge, when it is derived again at
    0.6x and 1.6x the tolerance: a white product on white leaks at one of them.
    """
    h, w = rgb.shape[:2]
    lab = to_lab(rgb)
    band = outer_ring((h, w), rule.band)
    colour = np.median(lab[band], axis=0)
    dist = np.linalg.norm(lab - colour, axis=2)
    near = dist[band] < rule.tol
    noise = float(lab[band][near].std(axis=0).mean()) if near.any() else float("inf")
    tol = float(min(rule.max_tol, rule.tol + rule.noise_tol * min(noise, 10.0)))
    mask = _segment(dist, tol, rule, tol / 2)
    area = float(mask.mean())
    stable = 0.0
    if area > 0:
        edge = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > cv2.erode(
            mask.astype(np.uint8), np.ones((3, 3), np.uint8)
        )
        lo, hi = (_segment(dist, tol * f, rule, tol / 2) for f in rule.stability)
        stable = max(0.0, 1.0 - float(((lo ^ hi) & ~edge).sum()) / float(mask.sum()))
    mask_u8 = np.where(mask, np.uint8(255), np.uint8(0))
    solidity = mask_quality(mask_u8)[0] if area > 0 else 0.0
    stats = {
        "area": round(area, 4),
        "solidity": round(float(solidity), 4),
        "border_touch": round(float(mask[outer_ring((h, w), 1)].mean()), 4),
        "stable": round(stable, 4),
        "band_noise": round(noise, 3),
        "band_plain": round(float(near.mean()), 4),
        "backdrop_l": round(float(colour[0]), 1),
        "tol": round(tol, 2),
    }
    return mask_u8, stats


def mask_passes(stats: dict[str, float], rule: MaskRule = MaskRule()) -> str | None:
    """None when a derived mask passes the quality filter, else the first reason it fails."""
    checks = (
        ("backdrop not plain", stats["band_noise"] <= rule.max_band_noise),
        ("product fills the border", stats["band_plain"] >= rule.min_band_plain),
        ("too small", stats["area"] >= rule.min_area),
        ("too large", stats["area"] <= rule.max_area),
        ("touches the border", stats["border_touch"] <= rule.max_border_touch),
        ("shredded", stats["solidity"] >= rule.min_solidity),
        ("unstable (product close to the backdrop)", stats["stable"] >= rule.min_stable),
    )
    return next((reason for reason, ok in checks if not ok), None)


@dataclass
class ProductSet:
    """Fashion Product photos of one split with derived masks: ``objects`` (edge colours
    decontaminated, ``keep`` = the items whose mask passes), ``raw`` (as shot, same masks and
    ``keep``) and each item's failure reason (None: passed)."""

    objects: Objects
    raw: Objects
    reasons: list[str | None]

    def __len__(self) -> int:
        return len(self.reasons)

    def counts(self) -> dict[str, int]:
        """How many photos passed and failed, by reason."""
        out = {"photos": len(self), "passed": sum(r is None for r in self.reasons)}
        for r in sorted({r for r in self.reasons if r is not None}):
            out[f"failed: {r}"] = self.reasons.count(r)
        return out


def product_records(root: Path, split: str) -> list[tuple[str, Path]]:
    """(id, path) of the Fashion Product photos of ``split`` (``train`` or ``heldout``, by the
    project's fixed rule on the id, ``training.data.is_heldout``), in ``styles.csv`` order."""
    from training.data import is_heldout, read_styles

    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, not {split!r}")
    return [(r.id, r.path) for r in read_styles(Path(root)) if is_heldout(r.id) == (split == "heldout")]


def load_product_objects(
    root: Path,
    split: str,
    limit: int | None = None,
    cache_dir: Path | None = CACHE_DIR,
    progress: bool = True,
    rule: MaskRule = MaskRule(),
) -> ProductSet:
    """The photos of ``split`` (the first ``limit``) at ``PRODUCT_HW`` with derived masks, cached."""
    records = product_records(root, split)[:limit]
    names = [f"{i}.jpg" for i, _ in records]
    h = hashlib.sha256(f"products v3 {PRODUCT_HW} {rule}".encode())
    for _, p in records:
        h.update(f"{p}|{p.stat().st_size}\n".encode())
    key = h.hexdigest()[:16]
    parts = ("rgb", "raw", "mask")
    files = {k: Path(cache_dir) / f"{key}_product_{k}.npy" for k in parts} if cache_dir else {}
    reasons_path = Path(cache_dir) / f"{key}_product_reasons.json" if cache_dir else None
    if reasons_path is not None and reasons_path.exists() and all(f.exists() for f in files.values()):
        rgb, raw, masks = (np.load(files[part]) for part in parts)
        reasons: list[str | None] = json.loads(reasons_path.read_text())
    else:
        rgb = np.empty((len(records), *PRODUCT_HW, 3), np.uint8)
        raw = np.empty_like(rgb)
        masks = np.empty((len(records), *PRODUCT_HW), np.uint8)
        reasons = []
        for k, (_, path) in enumerate(tqdm(records, desc=f"products {split}", disable=not progress)):
            raw[k] = read_rgb(path, PRODUCT_HW)
            masks[k], stats = derive_product_mask(raw[k], rule)
            reasons.append(mask_passes(stats, rule))
            rgb[k] = decontaminate(raw[k], masks[k], band=1, sigma=1.5)
        if reasons_path is not None:
            reasons_path.parent.mkdir(parents=True, exist_ok=True)
            for part, arr in zip(parts, (rgb, raw, masks), strict=True):
                np.save(files[part], arr)
            reasons_path.write_text(json.dumps(reasons))
    keep = np.asarray([k for k, r in enumerate(reasons) if r is None], np.int64)
    return ProductSet(Objects(rgb, masks, names, keep), Objects(raw, masks, names, keep.copy()), reasons)
