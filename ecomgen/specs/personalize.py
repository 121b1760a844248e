"""personalize: what a shopper browsed -> new product images in that style region and its colours (a VAE).

One request is one shopper (no batch axis): the Python steps see one history at a time,
while the encoder and decoder networks batch across shoppers (their rows are the
history's photos and the requested images). Colour: ``personalize_pre`` measures each browsed
photo's colour, ``personalize_aggregate`` combines them into the history's colour (a weighted
median, like the posteriors' weights), and ``personalize_post`` moves each decoded image's colour
towards it by a bounded L*a*b* shift.
"""

from __future__ import annotations

from ecomgen.models import vae as model
from ecomgen.spec import Batching, NetworkSpec, NetworkStep, PythonStep, ServedModel
from ecomgen.specs.common import HANDLERS, TEN_SECOND_QUEUE, network, rows
from ecomgen_client import contracts
from ecomgen_client.contracts import MAX_COUNT, MAX_HISTORY, PRODUCT_IMAGE_HW, TensorSpec

LATENT = model.LATENT_DIM
# Temperature of the samples around the combined posterior; chosen on train-split shoppers
# by training/vae_eval.py (training/results/personalize_eval.md).
TEMPERATURE = "0.75"
# Colour (ecomgen.serving.aggregate): the post step moves each decoded image's colour towards the
# history's (the weighted median of the browsed photos' colours) by at most MAX_SHIFT CIE76 units.
# Chosen by the colour ablation on train-split shoppers (training/results/personalize_eval.md):
# the smallest bound that reaches the colour target with type agreement, diversity and novelty
# kept. Choosing latents by a colour predictor in the aggregate step (``Aggregate``'s
# ``candidates`` and ``colour_predictor`` parameters, checkpoints/personalize_colour.safetensors)
# was measured too and is off: it cost 5-9% of the diversity.
MAX_SHIFT = "20"
MODULE = "ecomgen.models.vae"

IMAGE = TensorSpec("image", "FP32", (3, *PRODUCT_IMAGE_HW), kind="image")
ROWS = TensorSpec(
    "image", "FP32", (-1, 3, *PRODUCT_IMAGE_HW), max_dims=(MAX_HISTORY, 3, *PRODUCT_IMAGE_HW), kind="image"
)
MU = TensorSpec("mu", "FP32", (LATENT,))
LOGVAR = TensorSpec("logvar", "FP32", (LATENT,))
Z = TensorSpec("z", "FP32", (LATENT,))


# Up to 32 photos of a history, or 16 images of a shopper, per request; 64 rows a batch. No queue
# delay: every step of the chain would pay it again (see ecomgen/specs/upscale.py).
BATCHING = Batching(preferred_batch_sizes=(32, 64), max_queue_delay_us=0)


def _net(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> NetworkSpec:
    return network(name, inputs, outputs, max_batch=64, opt_batch=16, batching=BATCHING)


ENCODER = _net(model.ENCODER, (IMAGE,), (MU, LOGVAR))
DECODER = _net(model.DECODER, (Z,), (IMAGE,))
PI = TensorSpec("pi", "FP32", (-1,), max_dims=(MAX_HISTORY,))
PALETTE = TensorSpec("palette", "FP32", (-1, 3), max_dims=(MAX_HISTORY, 3))  # L*a*b* per history photo
COLOUR = TensorSpec("colour", "FP32", (3,))  # L*a*b* each output aims at
C = contracts.PERSONALIZE

PERSONALIZE = ServedModel(
    contract=C,
    steps=(
        PythonStep(
            "personalize_pre",
            f"{HANDLERS}.personalize:Preprocess",
            # seed and count only to refuse a bad request before the encoder runs for it
            (C.input("history"), C.input("weights"), C.input("seed"), C.input("count")),
            (ROWS, PI, PALETTE),
            max_batch_size=0,
        ),
        NetworkStep(ENCODER),
        PythonStep(
            "personalize_aggregate",
            f"{HANDLERS}.personalize:Aggregate",
            (
                rows(MU, MAX_HISTORY),
                rows(LOGVAR, MAX_HISTORY),
                PI,
                PALETTE,
                C.input("seed"),
                C.input("count"),
            ),
            (rows(Z, MAX_COUNT), rows(COLOUR, MAX_COUNT)),
            params=(("temperature", TEMPERATURE),),
            max_batch_size=0,
        ),
        NetworkStep(DECODER),
        PythonStep(
            "personalize_post",
            f"{HANDLERS}.personalize:Postprocess",
            (rows(IMAGE, MAX_COUNT), rows(Z, MAX_COUNT), rows(COLOUR, MAX_COUNT)),
            C.outputs,
            max_batch_size=0,
            params=(("catalogue", model.CATALOGUE_FILE), ("max_shift", MAX_SHIFT)),
            artifacts=(model.CATALOGUE_FILE,),
        ),
    ),
    batching=BATCHING,
    queue=TEN_SECOND_QUEUE,
    module=MODULE,
    training="training.vae",
    checkpoints=("personalize_vae.safetensors", "personalize_vae.json"),
)
