"""Bit accuracy of ecomgen's DWT-DCT watermark after JPEG 75 and a 0.5x resize, on the sizes we serve.

    flock /tmp/ecomgen-cpu.lock .venv/bin/python -m benchmarks.watermark_robustness \
        --data-dir ../shared/data --per-size 32 --out benchmarks/results/watermark-robustness.md

Images:
- the four ad formats: real creatives from ``render_ad`` (templates 0, 1, 2 in turn) around product
  photos from fashion-products (60x80, reduced to the 48x64 thumbnail size and enlarged x4 with Lanczos
  to 192x256, the size of the served close-up);
- 256x192: VITON test-split person photos (the try-on output size);
- 64x48: fashion-products photos reduced to the product_gan thumbnail size.

Attacks (Pillow): JPEG quality 75; a 0.5x resize (bicubic, antialiased); both (resize, then JPEG 75);
and, as extra checks, JPEG 50 and a 0.5x Lanczos resize. With ``--baseline``, the same images also go
through invisible-watermark's ``dwtDct`` (48 bits), for comparison; that package imports torch, so it
stays out of ``ecomgen/serving``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ecomgen.creative import provenance as P
from ecomgen.creative.ads import FORMATS, TEMPLATES, render_ad, validate_ad_fields
from ecomgen.hostinfo import cpu_model
from ecomgen.numerics import psnr

Attack = Callable[[np.ndarray], np.ndarray]


def jpeg(q: int) -> Attack:
    def run(a: np.ndarray) -> np.ndarray:
        b = io.BytesIO()
        Image.fromarray(a).save(b, "JPEG", quality=q)
        return np.asarray(Image.open(b).convert("RGB"))

    return run


def half(resample: Image.Resampling) -> Attack:
    def run(a: np.ndarray) -> np.ndarray:
        im = Image.fromarray(a)
        return np.asarray(im.resize((im.width // 2, im.height // 2), resample))

    return run


ATTACKS: dict[str, Attack] = {
    "none": lambda a: a,
    "JPEG 75": jpeg(75),
    "0.5x bicubic": half(Image.Resampling.BICUBIC),
    "0.5x + JPEG 75": lambda a: jpeg(75)(half(Image.Resampling.BICUBIC)(a)),
    "JPEG 50": jpeg(50),
    "0.5x Lanczos": half(Image.Resampling.LANCZOS),
}

TITLES = [
    ("Linen summer dress, relaxed fit", "49.90", "EUR", "NEW", "Shop now"),
    ("Classic leather watch", "129", "USD", "-20%", "Buy now"),
    ("夏季新品 限时优惠", "199", "CNY", "新品", "立即购买"),
    ("Everyday sneakers", "59.95", "GBP", None, "Shop"),
]


def product_photos(data_dir: Path, n: int, seed: int) -> list[Path]:
    folder = data_dir / "fashion-products" / "images"
    files = sorted(folder.glob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in rng.choice(len(files), size=n, replace=False)]


def closeup(path: Path) -> np.ndarray:
    thumb = Image.open(path).convert("RGB").resize((48, 64), Image.Resampling.LANCZOS)
    return np.asarray(thumb.resize((192, 256), Image.Resampling.LANCZOS))


def image_sets(data_dir: Path, per_size: int) -> dict[str, list[np.ndarray]]:
    sets: dict[str, list[np.ndarray]] = {}
    for k, fmt in enumerate(FORMATS):
        imgs = []
        for i, path in enumerate(product_photos(data_dir, per_size, seed=k)):
            title, price, cur, badge, cta = TITLES[i % len(TITLES)]
            f = validate_ad_fields(title=title, price=price, currency=cur, badge=badge, cta=cta, format=fmt)
            imgs.append(render_ad(closeup(path), f, i % len(TEMPLATES)))
        sets[fmt] = imgs
    viton = sorted((data_dir / "viton" / "test" / "image").glob("*.jpg"))
    rng = np.random.default_rng(7)
    sets["256x192"] = [
        np.asarray(Image.open(viton[i]).convert("RGB"))
        for i in rng.choice(len(viton), per_size, replace=False)
    ]
    sets["64x48"] = [
        np.asarray(Image.open(p).convert("RGB").resize((48, 64), Image.Resampling.LANCZOS))
        for p in product_photos(data_dir, per_size, seed=11)
    ]
    return sets


def imwatermark_pair() -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """invisible-watermark's dwtDct with the same 48 bits (BGR in, BGR out, as that package wants)."""
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    bits = [int(b) for b in P.PAYLOAD]

    def embed(rgb: np.ndarray) -> np.ndarray:
        enc = WatermarkEncoder()
        enc.set_watermark("bits", bits)
        return np.ascontiguousarray(enc.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")[..., ::-1])

    def decode(rgb: np.ndarray) -> np.ndarray:
        dec = WatermarkDecoder("bits", len(bits))
        return np.array(dec.decode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct"), dtype=np.uint8)

    return embed, decode


def measure(imgs: list[np.ndarray], scheme: str) -> dict[str, Any]:
    psnrs: list[float] = []
    acc: dict[str, list[float]] = {a: [] for a in ATTACKS}
    found: dict[str, list[bool]] = {a: [] for a in ATTACKS}
    clean_found = []
    if scheme == "invisible-watermark dwtDct":
        embed, decode = imwatermark_pair()
    for img in imgs:
        if scheme == "ecomgen":
            marked = P.embed_watermark(img)
            clean_found.append(P.decode_watermark(img).found)
        else:
            try:
                marked = embed(img)
            except RuntimeError:  # it refuses images under 256x256 pixels in area
                continue
        psnrs.append(psnr(img, marked))
        for name, attack in ATTACKS.items():
            attacked = attack(marked)
            if scheme == "ecomgen":
                r = P.decode_watermark(attacked)
                acc[name].append(r.agreement)
                found[name].append(r.found)
            else:
                try:
                    bits = decode(attacked)
                    acc[name].append(float(np.mean(bits == P.PAYLOAD)))
                except Exception:  # it refuses images that became too small
                    acc[name].append(float("nan"))
                found[name].append(acc[name][-1] >= P.FOUND_AGREEMENT)
    return {"psnr": psnrs, "acc": acc, "found": found, "clean_found": clean_found}


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}"


def report(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace, wall: float) -> str:
    lines = [
        "# Watermark robustness",
        "",
        "ecomgen's invisible watermark (`ecomgen/creative/provenance.py`: Haar DWT of the luma, 4x4 block",
        "DCT of the LL band, one bit per block in the sign of `C[1,2] - C[2,1]`, 48 bits repeated over",
        "the image and read back by a soft majority vote) after the attacks the issue names. Bit accuracy",
        "is the fraction of the 48 payload bits read back correctly. *Found* means at least 42 of 48 bits",
        f"agree ({P.FOUND_AGREEMENT:.3f}), the threshold `ecomgen verify` uses.",
        "",
        f"- Command: `{' '.join(['python -m benchmarks.watermark_robustness', *sys.argv[1:]])}`",
        f"- Machine: {machine()}",
        f"- Wall time: {wall:.0f} s. Margin per DWT level {P.STRENGTH} (pixel units), masking",
        f"  (floor, ceiling) {P.MASK} with reference {P.MASK_REF}, max push {P.MAX_PUSH} margins.",
        f"- Images per size: {args.per_size}. Ad formats are real `render_ad` creatives, and their product",
        "  photos are fashion-products images enlarged x4 from the 48x64 thumbnail size with Lanczos, not",
        "  with the SR network. 256x192 images are VITON test photos. 64x48 images are fashion-products",
        "  thumbnails.",
        "- Attacks (Pillow): JPEG at the given quality. 0.5x means a resize to half the width and height",
        '  (bicubic or Lanczos, antialiased). "0.5x + JPEG 75" resizes first, then compresses.',
        "",
    ]
    for scheme, by_size in results.items():
        lines += [f"## {scheme}", ""]
        head = "| size | PSNR dB (mean / min) | " + " | ".join(ATTACKS) + " |"
        lines += [head, "|" + "---|" * (2 + len(ATTACKS))]
        for size, r in by_size.items():
            ps = np.array(r["psnr"], dtype=float)
            if ps.size == 0:
                lines.append(f"| {size} | n/a | " + " | ".join("n/a" for _ in ATTACKS) + " |")
                continue
            cells = []
            for a in ATTACKS:
                acc = np.array(r["acc"][a], dtype=float)
                fnd = np.array(r["found"][a], dtype=bool)
                if np.isnan(acc).all():
                    cells.append("fails")
                    continue
                cells.append(f"{np.nanmean(acc):.3f} / {np.nanmin(acc):.3f}, found {fnd.mean():.0%}")
            lines.append(f"| {size} | {ps.mean():.1f} / {ps.min():.1f} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Cells: mean / worst bit accuracy, and the share of images where the mark is found.")
        if scheme == "ecomgen":
            fp = {s: float(np.mean(r["clean_found"])) for s, r in by_size.items()}
            lines.append(
                "False positives (unmarked originals reported as marked): "
                + ", ".join(f"{s} {v:.0%}" for s, v in fp.items())
                + "."
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("ECOMGEN_DATA_DIR", "../shared/data"))
    )
    p.add_argument("--per-size", type=int, default=32)
    p.add_argument("--baseline", action="store_true", help="also run invisible-watermark's dwtDct")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/watermark-robustness.md"))
    args = p.parse_args()
    t0 = time.time()
    sets = image_sets(args.data_dir, args.per_size)
    schemes = ["ecomgen"] + (["invisible-watermark dwtDct"] if args.baseline else [])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scheme in schemes:
        results[scheme] = {}
        for size, imgs in tqdm(sets.items(), desc=scheme):
            results[scheme][size] = measure(imgs, scheme)
    text = report(results, args, time.time() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
