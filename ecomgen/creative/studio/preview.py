"""Contact sheets of the studio for eyeballing: every scene with a product, and white main images.

    python -m ecomgen.creative.studio.preview --out out/studio-preview

Products are the catalogue fixtures (small photos on white); their matte here is a plain
white-background threshold, a stand-in for the matting network.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from .compose import check_main_image, compose_scene, main_image_fill, white_main_image
from .scenes import SCENES, scenes_for

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "fashion-products"
VITON = ROOT / "tests" / "fixtures" / "viton" / "test" / "cloth"


def matte_from_white(rgb: NDArray[np.uint8], lo: int = 6, hi: int = 24) -> NDArray[np.uint8]:
    """A matte for a product shot on a plain light backdrop (white or a soft grey gradient).

    The backdrop is modelled from the photo's border (inpainted inwards, which follows a gradient);
    a pixel's opacity ramps with its distance from that model between ``lo`` and ``hi``. Backdrop-like
    regions count as background when connected to the border, or when they are a large enclosed hole
    (between a bag's handles), so a white shirt's body stays opaque.
    """
    h, w = rgb.shape[:2]
    mask = np.full((h, w), 255, np.uint8)
    b = max(2, min(h, w) // 40)
    mask[:b] = mask[-b:] = 0
    mask[:, :b] = mask[:, -b:] = 0
    small = max(1, max(h, w) // 128)  # inpaint at ~128 px: the backdrop is smooth
    sm = cv2.resize(rgb, (w // small, h // small), interpolation=cv2.INTER_AREA)
    mk = cv2.resize(mask, (w // small, h // small), interpolation=cv2.INTER_NEAREST)
    model = cv2.resize(cv2.inpaint(sm, mk, 5, cv2.INPAINT_TELEA), (w, h), interpolation=cv2.INTER_LINEAR)
    # JPEG ringing makes the backdrop next to a dark edge *lighter* than the model: lightening counts
    # only beyond a margin, darkening and a change of hue fully.
    diff = rgb.astype(np.int16) - model.astype(np.int16)
    darker = (-diff).max(axis=2)
    lighter = diff.max(axis=2) - 14
    hue = np.abs(diff - diff.mean(axis=2, keepdims=True)).max(axis=2) * 2
    d = np.maximum(np.maximum(darker, lighter), hue).clip(0, 255)
    near = (d < hi).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    # Enclosed holes: large ones, or small ones that are clearly backdrop (between bag handles).
    area = stats[:, cv2.CC_STAT_AREA]
    mean_d = np.bincount(labels.ravel(), weights=d.ravel(), minlength=n) / np.maximum(area, 1)
    holes = np.flatnonzero((area >= 0.004 * h * w) | ((area >= 2) & (mean_d < lo)))
    bg_labels = np.union1d(border[border > 0], holes[holes > 0])
    bg = np.isin(labels, bg_labels) & (near > 0)
    solid = (~bg).astype(np.uint8)
    # Prune isolated pixels (fewer than 2 solid neighbours): JPEG specks, not structure.
    nb = cv2.filter2D(solid, -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - solid
    solid = (solid.astype(bool) & (nb >= 2)).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if n > 1:  # drop specks under 0.2% of the photo
        keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= 0.002 * h * w)
        solid = np.isin(lab, keep[keep > 0]).astype(np.uint8)
    # Edge band: a pixel mixing product and backdrop gets alpha = its distance from the backdrop
    # over that of the solid product next to it (a colour-line estimate), not a hard 1.
    # Small catalogue JPEGs smear an edge over 2-3 px, so the band reaches two pixels inside.
    k3 = np.ones((3, 3), np.uint8)
    core = cv2.erode(solid, np.ones((5, 5), np.uint8))
    band = cv2.dilate(solid, k3).astype(bool) & ~core.astype(bool)
    df = d.astype(np.float32)
    d_core = cv2.dilate(df * core, np.ones((7, 7), np.uint8))
    ramp = np.clip((df - lo) / np.maximum(d_core - lo, float(hi - lo)), 0, 1)
    a = np.where(core > 0, 1.0, np.where(band, ramp, 0.0))
    return np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)


def _open(path: Path, scale: float, mask: Path | None = None) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if mask is not None and mask.exists():  # a real mask: binarise (it is a JPEG), anti-alias the edge
        m = (np.asarray(Image.open(mask).convert("L")) > 127).astype(np.float32)
        a = np.clip(cv2.GaussianBlur(m, (0, 0), 0.7) * 255 + 0.5, 0, 255).astype(np.uint8)
    else:
        a = matte_from_white(rgb)  # at the photo's own size, as a matting step would
    if scale != 1.0:
        size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        rgb = np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4), np.uint8)
        a = np.asarray(cv2.resize(a, size, interpolation=cv2.INTER_LANCZOS4), np.uint8)
    return rgb, a


def load_products(scale: float = 1.0) -> dict[str, tuple[NDArray[np.uint8], NDArray[np.uint8]]]:
    """Article type -> (photo, matte) from the fixtures, enlarged by ``scale`` (Lanczos).

    Catalogue photos (60x80) for most types; the try-on garments (192x256, scaled by ``scale / 3``)
    for tops, whose catalogue photos show them worn.
    """
    out: dict[str, tuple[NDArray[np.uint8], NDArray[np.uint8]]] = {}
    with open(FIXTURES / "styles.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = FIXTURES / "images" / f"{row['id']}.jpg"
            if row["articleType"] in out or not path.exists():
                continue
            out[row["articleType"]] = _open(path, scale)
    cloth = sorted(VITON.glob("*.jpg"))
    for art, i in (("Tshirts", 3), ("Tops", 1)):
        if len(cloth) > i:
            out[art] = _open(cloth[i], max(1.0, scale / 3), VITON.parent / "cloth-mask" / cloth[i].name)
    return out


def synthetic_product(height: int = 1000) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """A clean high-resolution test product: a glazed ceramic bottle shot on white, with its exact matte.

    Drawn at 4x and area-averaged, so its edge is anti-aliased against the white like a real photo's.
    """
    s = 4
    h, w = height * s, int(height * 0.62) * s
    m = np.zeros((h, w), np.uint8)
    cx = w // 2
    body_w, body_top, body_bot = int(w * 0.42), int(h * 0.34), int(h * 0.96)
    cv2.rectangle(m, (cx - body_w, body_top + 60 * s), (cx + body_w, body_bot - 40 * s), (255,), -1)
    cv2.ellipse(m, (cx, body_top + 60 * s), (body_w, 60 * s), 0, 180, 360, (255,), -1)
    cv2.ellipse(m, (cx, body_bot - 40 * s), (body_w, 40 * s), 0, 0, 180, (255,), -1)
    neck_w = int(w * 0.13)
    cv2.rectangle(m, (cx - neck_w, int(h * 0.1)), (cx + neck_w, body_top + 20 * s), (255,), -1)
    cv2.rectangle(m, (cx - neck_w - 6 * s, int(h * 0.04)), (cx + neck_w + 6 * s, int(h * 0.12)), (255,), -1)
    # Cylinder shading: a diffuse falloff across x, a soft specular stripe and a darker base.
    x = (np.arange(w, dtype=np.float32) - cx) / body_w
    xn = np.clip(x, -1, 1)
    diffuse = 0.55 + 0.45 * np.sqrt(1 - xn**2) * (0.8 + 0.2 * -xn)
    spec = 0.5 * np.exp(-(((xn + 0.45) / 0.08) ** 2))
    y = np.arange(h, dtype=np.float32)[:, None] / h
    base = np.array([0.16, 0.36, 0.52], np.float32)  # a teal-blue glaze
    colour = (
        base[None, None, :]
        * diffuse[None, :, None]
        * (1.0 - 0.25 * np.clip((y - 0.85) / 0.11, 0, 1))[..., None]
    )
    colour = colour + spec[None, :, None]
    cap = (y < 0.12)[..., 0]
    colour[cap] = np.array([0.12, 0.1, 0.09], np.float32) * (0.7 + 0.6 * diffuse[None, :, None][0])
    size = (w // s, h // s)
    a = np.asarray(cv2.resize(m, size, interpolation=cv2.INTER_AREA), np.uint8)
    fg = cv2.resize(np.clip(colour, 0, 1), size, interpolation=cv2.INTER_AREA)
    af = a.astype(np.float32)[..., None] / 255
    rgb = np.clip((fg * af + (1 - af)) * 255 + 0.5, 0, 255).astype(np.uint8)  # on white
    return rgb, a


def _label(img: Image.Image, text: str) -> None:
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 8 + 6 * len(text), 14], fill=(0, 0, 0))
    d.text((4, 2), text, fill=(255, 255, 255))


def scene_sheet(out: Path, width: int, height: int, variant: int = 0, tile: int = 360) -> Path:
    products = load_products(scale=4.0)
    tiles = []
    for sc in SCENES:
        # Show each scene with an article type that would pick it (else a handbag).
        art = next((a for a in products if any(s.name == sc.name for s in scenes_for(a))), "Handbags")
        rgb, a = products[art]
        t0 = time.perf_counter()
        comp = compose_scene(rgb, a, sc, width, height, art, variant)
        ms = (time.perf_counter() - t0) * 1000
        im = Image.fromarray(comp.image)
        im.thumbnail((tile, tile), Image.Resampling.LANCZOS)
        _label(im, f"{sc.name} | {art} | {ms:.0f} ms")
        tiles.append(im)
    cols = 6
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * tw, -(-len(tiles) // cols) * th), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tw, (i // cols) * th))
    path = out / f"scenes_{width}x{height}_v{variant}.png"
    sheet.save(path)
    return path


def main_sheet(out: Path, size: int = 2000) -> Path:
    products = load_products(scale=4.0)
    tiles = []
    for art, (rgb, a) in products.items():
        img = white_main_image(rgb, a, size, size)
        im = Image.fromarray(img)
        im.thumbnail((300, 300), Image.Resampling.LANCZOS)
        bad = check_main_image(img)
        _label(im, f"{art} fill={main_image_fill(img):.3f} {'OK' if not bad else 'BAD'}")
        tiles.append(im)
    sheet = Image.new("RGB", (len(tiles) * 300, 300), (200, 200, 200))
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * 300, 0))
    path = out / f"white_main_{size}.png"
    sheet.save(path)
    return path


HEROES = (
    ("unknown", "table-oak", 1080, 1350, 0),
    ("unknown", "photo-pale-wood", 1080, 1080, 1),
    ("unknown", "photo-pier-fog", 1080, 1350, 0),
    ("Handbags", "table-oak", 1080, 1350, 0),
    ("Casual Shoes", "photo-lakeside-deck", 1080, 1350, 0),
    ("Heels", "table-marble", 1080, 1080, 0),
    ("Casual Shoes", "photo-autumn-leaves", 1200, 628, 1),
    ("Watches", "studio-charcoal", 1080, 1080, 0),
    ("Tops", "flatlay-linen", 2048, 2048, 0),
    ("Tops", "studio-blush", 1080, 1920, 2),
)


def hero_images(out: Path) -> list[Path]:
    """Single full-size composites, and a 2000x2000 white main image of a large (~1000 px) photo."""
    products = load_products(scale=4.0)
    products["unknown"] = synthetic_product(1000)
    paths = []
    for art, scene, w, h, v in HEROES:
        rgb, a = products[art]
        img = compose_scene(rgb, a, scene, w, h, art, v).image
        path = out / f"hero_{scene}_{art.replace(' ', '-')}_{w}x{h}_v{v}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    for name in ("Tops", "unknown"):  # the try-on garment at 4x (768x1024), the 620x1000 bottle
        rgb, a = products[name]
        path = out / f"white_main_2000_{name}.png"
        Image.fromarray(white_main_image(rgb, a, 2000, 2000)).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/studio-preview"))
    p.add_argument("--size", default="1080x1080", help="scene image size, WxH")
    p.add_argument("--variant", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(scene_sheet(args.out, w, h, args.variant))
    print(main_sheet(args.out))
    for path in hero_images(args.out):
        print(path)


if __name__ == "__main__":
    main()
