"""The pre/post steps of every served model; a config names one as ``handler: module:Class``.

:func:`load_handler` is the only way a config reaches code: the backend and the fused pipeline
both find steps here, so nothing imports back up into the backend.
"""

from __future__ import annotations

import importlib

from ecomgen.serving.step import Step

PACKAGE = __name__ + "."


def load_handler(spec: str) -> type[Step]:
    """``module:Class`` under ecomgen.serving.handlers (configs cannot name arbitrary code)."""
    module_name, _, cls_name = spec.partition(":")
    if not module_name.startswith(PACKAGE) or not cls_name:
        raise ValueError(f"handler {spec!r} must be '{PACKAGE}<module>:<Class>'")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Step)):
        raise TypeError(f"handler {spec!r} is not a Step")
    return cls
