"""Encoded images in and out of the serving steps (Pillow only).

Decoding is the most exposed code in the stack: it reads bytes from any caller. Only
the formats the contract lists are accepted (JPEG, PNG, WebP: GIF, BMP, TIFF and the
rest are refused even though Pillow could open them), the header's size is checked
against the bounds before any pixel is decoded, and anything Pillow raises becomes an
INVALID_ARG error naming the input.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ecomgen.errors import RequestError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
# Pillow refuses to open anything larger than this many pixels (decompression bombs); far
# above any allowed size, so only a lying header trips it, and never with a half-decoded image.
Image.MAX_IMAGE_PIXELS = 2048 * 2048 * 2


def as_bytes(value: object) -> bytes:
    """A BYTES tensor element as bytes (Triton gives bytes; numpy may give str)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise RequestError(f"expected bytes, got {type(value).__name__}")


def decode(name: str, data: bytes, min_side: int, max_side: int, keep_alpha: bool = False) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes -> HxWx3 uint8 sRGB (HxWx4 with ``keep_alpha`` when the file
    has transparency), or a RequestError naming the problem.

    Shop photos are not clean arrays: the EXIF orientation is applied, an embedded ICC profile is
    converted to sRGB, and CMYK JPEGs, 16-bit PNGs, palette PNGs with transparency and grey images
    are converted rather than refused.
    """
    if len(data) == 0:
        raise RequestError(f"input '{name}' is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as im:
                w, h = im.size
                # Checked before decoding, so a tiny file claiming 60000x60000 never allocates.
                if not (min_side <= h <= max_side and min_side <= w <= max_side):
                    raise RequestError(
                        f"input '{name}' is {h}x{w} pixels; each side must be in [{min_side}, {max_side}]"
                    )
                if getattr(im, "n_frames", 1) > 1:
                    raise RequestError(f"input '{name}' is an animation; send one still image")
                pixels = _to_srgb(im, keep_alpha)
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow refuses the header's size before our bounds check sees it: say what it is.
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "far too large"
        raise RequestError(f"input '{name}' is {size}; each side must be in [{min_side}, {max_side}]") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        why = str(e).splitlines()[0][:80] if str(e) else ""
        raise RequestError(
            f"input '{name}' is not a decodable {'/'.join(ALLOWED_FORMATS)} image "
            f"({type(e).__name__}{': ' + why if why else ''})"
        ) from e
    if sorted(pixels.shape[:2]) != sorted((h, w)):
        raise RequestError(f"input '{name}' decoded to {pixels.shape[:2]}, not its declared {h}x{w}")
    return pixels


def _to_srgb(im: Image.Image, keep_alpha: bool) -> np.ndarray:
    """Decoded pixels, upright, in sRGB, 8 bits a channel (RGB, or RGBA when asked and present)."""
    im.load()
    profile = im.info.get("icc_profile")
    upright = ImageOps.exif_transpose(im)
    im = upright if upright is not None else im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG: keep the top 8 bits
        im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    target = "RGBA" if keep_alpha and has_alpha else "RGB"
    if profile and im.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(
                im, src, _SRGB, outputMode=target if im.mode != "CMYK" else "RGB"
            )
            im = converted if converted is not None else im
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the pixels as they are
    alpha = im.getchannel("A") if target == "RGBA" and "A" in im.getbands() else None
    if alpha is None and target == "RGBA" and im.mode == "P":
        rgba = im.convert("RGBA")
        im, alpha = rgba, rgba.getchannel("A")
    rgb = np.asarray(im.convert("RGB"))
    if target == "RGBA" and alpha is not None:
        return np.dstack([rgb, np.asarray(alpha)])
    return rgb


_SRGB = ImageCms.createProfile("sRGB")


def encode(image: np.ndarray, encoding: str = "png", quality: int = 90) -> bytes:
    """HxWx3 uint8 -> PNG/JPEG/WebP bytes (no metadata; provenance adds its own)."""
    fmt = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}[encoding.lower()]
    buf = io.BytesIO()
    kwargs = {} if fmt == "PNG" else {"quality": quality}
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def fit(image: np.ndarray, height: int, width: int, background: int = 255) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad with ``background`` to height x width."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.full((height, width, 3), background, dtype=np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out
