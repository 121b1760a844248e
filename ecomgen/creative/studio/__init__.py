"""The product studio: a scene library and torch-free composition of cut-outs.

numpy, Pillow and OpenCV only. A cut-out is the shop's photo (uint8 HxWx3 sRGB) and its matte
(uint8 HxW, from ``ecomgen.creative.matte`` or any matting step).

- :func:`white_main_image`: the marketplace main image (pure white, product filling 85%), checked
  by :func:`main_image_fill` / :func:`check_main_image`.
- :func:`scene_image`: the product on a scene's surface with contact and cast shadows, bounded
  colour harmonisation and, on glossy scenes, a reflection; :func:`compose_scene` also returns
  the placement and harmonisation it used.
- :data:`SCENE_NAMES`, :func:`scenes_for` (the ``auto`` choice per article type),
  :func:`render_scene`, :func:`scene_layout`, :func:`load_manifest`.
"""

from .compose import (
    ALPHA_THRESHOLD,
    MAIN_FILL,
    MAIN_FILL_TOLERANCE,
    OUTPUT_FORMATS,
    Composite,
    check_main_image,
    compose_scene,
    cutout,
    main_image_fill,
    matte_box,
    product_pixels_kept,
    resample,
    scene_image,
    white_main_image,
)
from .foreground import estimate_foreground
from .harmonise import MAX_DE_COLOUR, MAX_DL, Harmonisation, delta_e00, lab_shift
from .placement import SCALE_RULE, Placement
from .scenes import (
    ARTICLE_TYPES,
    REDISTRIBUTABLE,
    SCENE_NAMES,
    SCENES,
    Light,
    Scene,
    SceneLayout,
    Surface,
    get_scene,
    load_manifest,
    render_scene,
    scene_layout,
    scenes_for,
)

__all__ = [
    "ALPHA_THRESHOLD",
    "ARTICLE_TYPES",
    "MAIN_FILL",
    "MAIN_FILL_TOLERANCE",
    "MAX_DE_COLOUR",
    "MAX_DL",
    "OUTPUT_FORMATS",
    "REDISTRIBUTABLE",
    "SCALE_RULE",
    "SCENES",
    "SCENE_NAMES",
    "Composite",
    "Harmonisation",
    "Light",
    "Placement",
    "Scene",
    "SceneLayout",
    "Surface",
    "check_main_image",
    "compose_scene",
    "cutout",
    "delta_e00",
    "estimate_foreground",
    "get_scene",
    "lab_shift",
    "load_manifest",
    "main_image_fill",
    "matte_box",
    "product_pixels_kept",
    "render_scene",
    "resample",
    "scene_image",
    "scene_layout",
    "scenes_for",
    "white_main_image",
]
