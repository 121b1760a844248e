"""ad_creative, inventory_image and inventory_sheet: products laid out for publishing.

Each is one Python step, one request per ad set, SKU or sheet (no batch axis). The step runs only
the networks its request's route needs (``PythonStep.calls``): the matting network for an uploaded
photo; the generator and, for single products, the x4 close-up network for a generated one.
"""

from __future__ import annotations

from ecomgen.spec import Batching, PythonStep, QueuePolicy, ServedModel
from ecomgen.specs.common import HANDLERS
from ecomgen.specs.product_gan import GENERATOR
from ecomgen.specs.studio import PRODUCT_CALLS, PRODUCT_CHECKPOINTS, PRODUCT_MODULES, PRODUCT_PARAMS
from ecomgen_client import contracts
from ecomgen_client.contracts import Contract

H = f"{HANDLERS}.ads"
# Layout and encoding of 1080-px creatives take tens of milliseconds each: a short queue keeps
# overload from piling up images that would be late anyway.
QUEUE = QueuePolicy(max_queue_size=32, default_timeout_us=20_000_000)
BATCHING = Batching(preferred_batch_sizes=(), max_queue_delay_us=0)


def _served(contract: Contract, handler: str, calls: tuple = PRODUCT_CALLS) -> ServedModel:
    return ServedModel(
        contract=contract,
        steps=(
            PythonStep(
                contract.name,
                f"{H}:{handler}",
                contract.inputs,
                contract.outputs,
                PRODUCT_PARAMS,
                max_batch_size=0,
                calls=calls,
            ),
        ),
        batching=BATCHING,
        queue=QUEUE,
        module=PRODUCT_MODULES,
        cpu_instances=2,
        deadline_us=20_000_000,
        max_inflight_requests=16,
        training="training.product_gan + training.sr + training.cutout",
        checkpoints=PRODUCT_CHECKPOINTS,
    )


AD_CREATIVE = _served(contracts.AD_CREATIVE, "AdCreative")
INVENTORY_IMAGE = _served(contracts.INVENTORY_IMAGE, "InventoryImage")
# Up to 64 SKUs: their 64x48 thumbnails go straight into the sheet's small cells; uploaded photos
# are shown as they are (no cut-out in a 216x288 cell).
INVENTORY_SHEET = _served(contracts.INVENTORY_SHEET, "InventorySheet", calls=(GENERATOR,))
