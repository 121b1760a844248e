"""Encoded images in and out of the serving steps (Pillow only).

Decoding is the most exposed code in the stack: it reads bytes from any caller. Only
the formats the contract lists are accepted (JPEG, PNG, WebP: GIF, BMP, TIFF and the
rest are refused even though Pillow could open them), the header's size is checked
against the bounds before any pixel is decoded, and anything Pillow raises becomes an
INVALID_ARG error naming the input.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def decode(name: str, data: bytes, min_side: int, max_side: int) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes -> HxWx3 uint8 RGB, or a RequestError naming the problem."""
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
                rgb = np.asarray(im.convert("RGB"))
    except RequestError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
        MemoryError,
    ) as e:
        raise RequestError(
            f"input '{name}' is not a decodable {'/'.join(ALLOWED_FORMATS)} image ({type(e).__name__})"
        ) from e
    if rgb.shape[:2] != (h, w):
        raise RequestError(f"input '{name}' decoded to {rgb.shape[:2]}, not its declared {h}x{w}")
    return rgb


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
