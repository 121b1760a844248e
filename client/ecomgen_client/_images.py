"""Image helpers; Pillow is imported only here and only when PIL output is asked for."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image


def _pil_image_module() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "Pillow is needed for PIL images and PNG files: pip install 'ecomgen-client[images]'"
        ) from exc
    return Image


def require_pillow() -> None:
    """ImportError, saying how to install it, when Pillow is missing."""
    _pil_image_module()


def to_pil(images: npt.NDArray[np.uint8]) -> list[Image.Image]:
    """[N, H, W, 3] uint8 -> N RGB images."""
    image_mod = _pil_image_module()
    return [image_mod.fromarray(np.ascontiguousarray(img)) for img in images]


def make_grid(
    images: npt.NDArray[np.uint8], cols: int | None = None, pad: int = 2, fill: int = 255
) -> npt.NDArray[np.uint8]:
    """Tile [N, H, W, C] images row-major into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, H, W, C] batch, got shape {list(images.shape)}")
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    if cols <= 0:
        raise ValueError(f"cols must be > 0, got {cols}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=images.dtype)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(image: npt.NDArray[np.uint8], path: str | Path) -> Path:
    """Write one [H, W, 3] uint8 image as PNG, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil_image_module().fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return path


def load_rgb(path: str | Path) -> npt.NDArray[np.uint8]:
    """Read an image file as [H, W, 3] uint8 RGB."""
    with _pil_image_module().open(path) as im:
        return np.asarray(im.convert("RGB"))


def fit(image: npt.NDArray[np.uint8], height: int, width: int, fill: int = 255) -> npt.NDArray[np.uint8]:
    """Scale into height x width keeping the aspect ratio, padded with ``fill`` (needs Pillow)."""
    pil = _pil_image_module().fromarray(np.ascontiguousarray(image))
    pil.thumbnail((width, height))
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    arr = np.asarray(pil.convert("RGB"))
    top, left = (height - arr.shape[0]) // 2, (width - arr.shape[1]) // 2
    out[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return out


# --- the product studio: photos in, labelled cut-outs out ------------------------------------------

PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")  # what the server accepts as ``product`` bytes
IPTC_DIGITAL_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE + "compositeWithTrainedAlgorithmicMedia"
_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def decode_photo(data: bytes) -> npt.NDArray[np.uint8]:
    """JPEG/PNG/WebP bytes -> upright [H, W, 3] uint8 RGB (EXIF orientation applied, as the server
    does). Raises OSError (or Pillow's DecompressionBombError) for anything else."""
    import io

    image_mod = _pil_image_module()
    from PIL import ImageOps

    with image_mod.open(io.BytesIO(data), formats=list(PHOTO_FORMATS)) as im:
        im.load()
        upright = ImageOps.exif_transpose(im) or im
        return np.asarray(upright.convert("RGB"))


def resize(
    image: npt.NDArray[np.uint8], height: int, width: int, *, smooth: bool = False
) -> npt.NDArray[np.uint8]:
    """[H, W] or [H, W, C] uint8 to height x width: Lanczos, or bilinear with ``smooth`` (for mattes,
    where Lanczos' ringing would leave faint halos around the product)."""
    image_mod = _pil_image_module()
    method = image_mod.Resampling.BILINEAR if smooth else image_mod.Resampling.LANCZOS
    pil = image_mod.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((width, height), method))


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def xmp_packet(source_type: str, creator_tool: str) -> bytes:
    """A minimal XMP packet with IPTC ``Iptc4xmpExt:DigitalSourceType``, the tool and a plain-words
    note: the same structure as the server's labels (``ecomgen.creative.provenance.xmp_packet``)."""
    what = (
        "composite with AI-generated content"
        if source_type.endswith("compositeWithTrainedAlgorithmicMedia")
        else "AI-generated image"
    )
    tool = _xml_attr(creator_tool)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{_NS["x"]}">\n'
        f' <rdf:RDF xmlns:rdf="{_NS["rdf"]}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{_NS["Iptc4xmpExt"]}"\n'
        f'    xmlns:xmp="{_NS["xmp"]}"\n'
        f'    xmlns:dc="{_NS["dc"]}"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{_xml_attr(source_type)}"\n'
        f'    xmp:CreatorTool="{tool}">\n'
        f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{_xml_attr(what)} ({tool})'
        "</rdf:li></rdf:Alt></dc:description>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def encode_png(image: npt.NDArray[np.uint8], xmp: bytes | None = None, compress_level: int = 3) -> bytes:
    """[H, W], [H, W, 3] or [H, W, 4] uint8 -> PNG bytes, with ``xmp`` in an iTXt
    ``XML:com.adobe.xmp`` chunk (uncompressed, as XMP readers expect)."""
    import io

    image_mod = _pil_image_module()
    from PIL.PngImagePlugin import PngInfo

    info = None
    if xmp is not None:
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), lang="", tkey="", zip=False)
    buf = io.BytesIO()
    image_mod.fromarray(np.ascontiguousarray(image)).save(
        buf, format="PNG", pnginfo=info, compress_level=compress_level
    )
    return buf.getvalue()


def encode_lossless(image: Any) -> bytes:
    """A PIL image or uint8 array as PNG bytes, to upload a photo held in memory. A PIL image with
    transparency keeps it (the server may use a photo's own alpha)."""
    if isinstance(image, np.ndarray):
        return encode_png(image)
    import io

    _pil_image_module()
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    buf = io.BytesIO()
    image.convert("RGBA" if has_alpha else "RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
