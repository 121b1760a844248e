"""Loaders for VITON try-on data in the CP-VTON / VITON-HD layout.

    <root>/train_pairs.txt, <root>/test_pairs.txt      "person.jpg cloth.jpg" per line
    <root>/<split>/image/        person photos (RGB JPEG)
    <root>/<split>/cloth/        catalogue garments (RGB JPEG)
    <root>/<split>/cloth-mask/   garment masks (L JPEG; unused: the server derives its own)
    <root>/<split>/image-parse/  20-label LIP parse maps (palette PNG); VITON-HD's
                                 ``image-parse-v3`` is read as well

The 256x192 copy in ``../shared/data/viton`` (3,000 train pairs, the full 2,032-pair test
split) has this layout, and so does the full VITON set that ``python -m training.viton_full``
places in ``data/viton-full`` (14,221 train pairs; its test split is byte-identical to the
shared one), and a user's own VITON-HD download (1024x768): images are read at their native
resolution and resized to the training size. Pairs files may also sit inside ``<split>/``.

``cached_split`` decodes a split once into uint8 ``.npy`` files under ``build/viton_cache/``
(git-ignored) and memory-maps them, so training does not decode JPEGs. ``is_validation``
holds out a stable 3% of the *train* persons (by a hash of the id) for ablations and model
choice; the test split is only ever evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ecomgen.creative.images import fit
from ecomgen.models.tryon import ARMS, HEAD, LOWER, UPPER
from ecomgen.serving.handlers.tryon import HEIGHT, WIDTH, garment_mask
from training.paths import BUILD_DIR, SHARED_DATA

DEFAULT_VITON_DIR = Path(os.environ.get("ECOMGEN_VITON_DIR", SHARED_DATA / "viton"))
FULL_VITON_DIR = Path(__file__).resolve().parents[1] / "data" / "viton-full"
CACHE_DIR = BUILD_DIR / "viton_cache"
VALIDATION_PERCENT = 3
# OpenPose COCO-18 keypoints of an arm: shoulder, elbow, wrist (right arm, then left arm).
ARM_KEYPOINTS = ((2, 3, 4), (5, 6, 7))

# The try-on networks see five regions, merged from the 20 LIP labels.
# LIP: 0 bg, 1 hat, 2 hair, 3 glove, 4 sunglasses, 5 upper-clothes, 6 dress, 7 coat, 8 socks,
# 9 pants, 10 jumpsuits (VITON-HD: neck), 11 scarf, 12 skirt, 13 face, 14/15 arms, 16/17 legs,
# 18/19 shoes.
_LIP_TO_REGION = np.zeros(256, dtype=np.uint8)
for _labels, _region in (
    ((1, 2, 4, 10, 13), HEAD),
    ((5, 6, 7, 11), UPPER),
    ((3, 14, 15), ARMS),
    ((8, 9, 12, 16, 17, 18, 19), LOWER),
):
    _LIP_TO_REGION[list(_labels)] = _region

PARSE_DIRS = ("image-parse", "image-parse-v3")


@dataclass(frozen=True)
class TryOnPair:
    person: Path
    cloth: Path
    parse: Path | None  # the person's parse map (None if the data has none)


def _pairs_file(root: Path, split: str) -> Path:
    for path in (root / f"{split}_pairs.txt", root / split / f"{split}_pairs.txt"):
        if path.exists():
            return path
    raise FileNotFoundError(f"no {split}_pairs.txt under {root} or {root / split}")


def _parse_dir(split_dir: Path) -> Path | None:
    return next((split_dir / d for d in PARSE_DIRS if (split_dir / d).is_dir()), None)


def own_cloth(person_name: str, cloth_dir: Path) -> Path:
    """The garment a person wears: VITON names it ``<id>_1.jpg`` for ``<id>_0.jpg``, VITON-HD the same."""
    stem = Path(person_name).stem
    for name in (f"{stem[:-2]}_1.jpg" if stem.endswith("_0") else None, person_name):
        if name and (cloth_dir / name).exists():
            return cloth_dir / name
    raise FileNotFoundError(f"no garment for {person_name} in {cloth_dir}")


def read_pairs(root: Path = DEFAULT_VITON_DIR, split: str = "test", paired: bool = True) -> list[TryOnPair]:
    """Pairs of ``split``. ``paired``: each person with their own garment (the ground truth is
    the person photo); else the pairs file as written (test_pairs.txt is the unpaired protocol).
    """
    root = Path(root)
    split_dir = root / split
    if not (split_dir / "image").is_dir():
        raise FileNotFoundError(f"{split_dir / 'image'} not found: expected the VITON/CP-VTON layout")
    parse_dir = _parse_dir(split_dir)
    pairs = []
    for line in _pairs_file(root, split).read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        person = split_dir / "image" / fields[0]
        cloth = own_cloth(fields[0], split_dir / "cloth") if paired else split_dir / "cloth" / fields[1]
        parse = parse_dir / f"{Path(fields[0]).stem}.png" if parse_dir else None
        pairs.append(TryOnPair(person, cloth, parse if parse and parse.exists() else None))
    if not pairs:
        raise ValueError(f"no pairs in {_pairs_file(root, split)}")
    return pairs


def load_rgb(path: Path, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    with Image.open(path) as im:
        return fit(np.asarray(im.convert("RGB")), *size)


def load_regions(path: Path, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """LIP parse map -> HxW uint8 region ids (nearest-neighbour resize keeps labels exact)."""
    with Image.open(path) as im:
        labels = np.asarray(im if im.mode in ("P", "L") else im.convert("L"))
    h, w = labels.shape
    if (h, w) != size:
        scale = min(size[0] / h, size[1] / w)
        nh, nw = round(h * scale), round(w * scale)
        small = np.asarray(Image.fromarray(labels).resize((nw, nh), Image.Resampling.NEAREST))
        labels = np.zeros(size, dtype=np.uint8)
        top, left = (size[0] - nh) // 2, (size[1] - nw) // 2
        labels[top : top + nh, left : left + nw] = small
    return _LIP_TO_REGION[labels]


@dataclass
class TryOnData:
    """uint8 arrays (in memory or memory-mapped): person/cloth NxHxWx3, regions NxHxW (0 where
    unknown); ``gmask`` NxHxW uint8 {0, 1}: the served garment mask of each cloth (optional)."""

    person: np.ndarray
    cloth: np.ndarray
    regions: np.ndarray
    pairs: list[TryOnPair]
    gmask: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.pairs)

    def garment_masks(self, idx: np.ndarray) -> np.ndarray:
        if self.gmask is not None:
            return self.gmask[idx].astype(np.float32)
        return np.stack([garment_mask(c) for c in self.cloth[idx]])

    def subset(self, idx: np.ndarray) -> TryOnData:
        gm = None if self.gmask is None else self.gmask[idx]
        pairs = [self.pairs[i] for i in idx]
        return TryOnData(self.person[idx], self.cloth[idx], self.regions[idx], pairs, gm)


def is_validation(person: Path | str) -> bool:
    """A stable ``VALIDATION_PERCENT``% of persons, by a hash of the file name."""
    digest = hashlib.sha1(Path(person).stem.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < VALIDATION_PERCENT


def read_pose(path: Path) -> np.ndarray:
    """OpenPose JSON -> 18 x 3 (x, y, confidence); zeros where missing."""
    out = np.zeros((18, 3), np.float32)
    if path.exists():
        people = json.loads(path.read_text()).get("people") or []
        if people:
            k = np.asarray(people[0].get("pose_keypoints") or people[0].get("pose_keypoints_2d") or [])
            k = k.reshape(-1, 3)[:18]
            out[: len(k)] = k
    return out


def pose_path(pair: TryOnPair) -> Path:
    return pair.person.parent.parent / "pose" / f"{pair.person.stem}_keypoints.json"


def cached_split(
    root: Path = DEFAULT_VITON_DIR, split: str = "train", paired: bool = True, cache: Path = CACHE_DIR
) -> TryOnData:
    """The whole split as memory-mapped uint8 arrays, decoded once into ``cache``.

    The cache key is the resolved root, the split, ``paired`` and the pairs file's size and
    modification time: a new download is decoded again.
    """
    pairs = read_pairs(root, split, paired)
    pf = _pairs_file(Path(root), split)
    key = f"{Path(root).resolve()}|{split}|{paired}|{pf.stat().st_size}|{pf.stat().st_mtime_ns}|v1"
    folder = cache / hashlib.sha1(key.encode()).hexdigest()[:16]
    names = ("person", "cloth", "regions", "gmask")
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        data = load_pairs(pairs, desc=f"caching viton {split}")
        gm = np.stack([garment_mask(c) for c in data.cloth]).astype(np.uint8)
        for name, arr in zip(names, (data.person, data.cloth, data.regions, gm), strict=True):
            np.save(folder / f"{name}.npy", arr)
        (folder / "done").write_text(key + "\n")
    arrays = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in names]
    return TryOnData(arrays[0], arrays[1], arrays[2], pairs, arrays[3])


def load_pairs(
    pairs: list[TryOnPair], size: tuple[int, int] = (HEIGHT, WIDTH), desc: str = "viton"
) -> TryOnData:
    n = len(pairs)
    person = np.empty((n, *size, 3), dtype=np.uint8)
    cloth = np.empty((n, *size, 3), dtype=np.uint8)
    regions = np.zeros((n, *size), dtype=np.uint8)
    for i, pair in enumerate(tqdm(pairs, desc=desc, unit="pair", leave=False)):
        person[i] = load_rgb(pair.person, size)
        cloth[i] = load_rgb(pair.cloth, size)
        if pair.parse is not None:
            regions[i] = load_regions(pair.parse, size)
    return TryOnData(person, cloth, regions, pairs)


def load_split(
    root: Path = DEFAULT_VITON_DIR, split: str = "train", paired: bool = True, limit: int | None = None
) -> TryOnData:
    pairs = read_pairs(root, split, paired)[:limit]
    return load_pairs(pairs, desc=f"viton {split}")


def fake_tryon(n: int, seed: int = 0, size: tuple[int, int] = (HEIGHT, WIDTH)) -> TryOnData:
    """Synthetic stand-in (a coloured torso box on a white background) for smoke runs."""
    rng = np.random.default_rng(seed)
    h, w = size
    person = np.full((n, h, w, 3), 250, dtype=np.uint8)
    cloth = np.full((n, h, w, 3), 250, dtype=np.uint8)
    regions = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        colour = rng.integers(0, 200, 3, dtype=np.uint8)
        top, left = rng.integers(h // 5, h // 3), rng.integers(w // 5, w // 3)
        person[i, : h // 5, w // 3 : 2 * w // 3] = (200, 160, 130)
        regions[i, : h // 5, w // 3 : 2 * w // 3] = HEAD
        person[i, top : top + h // 3, left : w - left] = colour
        regions[i, top : top + h // 3, left : w - left] = UPPER
        person[i, top + h // 3 :, w // 3 : 2 * w // 3] = (40, 40, 90)
        regions[i, top + h // 3 :, w // 3 : 2 * w // 3] = LOWER
        cloth[i, h // 4 : 3 * h // 4, w // 6 : 5 * w // 6] = colour
    pairs = [TryOnPair(Path(f"fake_{i}_0.jpg"), Path(f"fake_{i}_1.jpg"), None) for i in range(n)]
    return TryOnData(person, cloth, regions, pairs)
