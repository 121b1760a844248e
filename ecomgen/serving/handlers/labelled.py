"""Provenance for every encoded output: one signer per process, built at startup from the environment.

``ECOMGEN_C2PA_CERT`` / ``ECOMGEN_C2PA_KEY`` configure the C2PA signer (``ecomgen.creative.provenance``);
without them manifests are off, and the XMP label and the invisible watermark are still applied.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ecomgen.creative.provenance import C2paSigner, encode_labelled, manifest_status, signer_from_env

log = logging.getLogger("ecomgen.serving")


@functools.cache
def signer() -> C2paSigner | None:
    """The process's C2PA signer (None: manifests off). A bad configuration fails the model load."""
    config = signer_from_env()
    built = C2paSigner(config) if config is not None else None
    log.warning("%s", manifest_status(built))  # warning: Triton's default log level shows it
    return built


def labelled(
    image: np.ndarray,
    encoding: str,
    source_type: str,
    title: str | None = None,
    credit: str | None = None,
    keep_white: bool = False,
) -> bytes:
    """``image`` encoded as ``encoding`` with the watermark (sparing pure white with ``keep_white``), the
    XMP source type (and a credit line the image must carry, if any) and, if configured, C2PA."""
    return encode_labelled(
        image,
        encoding,  # type: ignore[arg-type]
        source_type,
        signer=signer(),
        title=title,
        credit=credit,
        keep_white=keep_white,
    )
