"""product_gan: (class_id, seed) -> a 64x48 product photo of that article type."""

from __future__ import annotations

from ecomgen.served.common import HANDLERS, TO_UINT8
from ecomgen.spec import (
    Batching,
    NetworkSpec,
    NetworkStep,
    OptimizationProfile,
    PythonStep,
    QueuePolicy,
    ServedModel,
)
from ecomgen_client import contracts
from ecomgen_client.contracts import PRODUCT_CLASSES, PRODUCT_IMAGE_HW, TensorSpec

LATENT_DIM = 128
# A bounded queue: overload is rejected, and the memory queued requests hold stays bounded
# (benchmarks/results: soak). No default queue timeout: with one, single-row requests from
# perf_analyzer got p99 0.59 s and 236 images/s at c=32, without it 0.09 s and 690
# (benchmarks/results/2026-12-02-*-product_gan-hotpath-variants.md). A caller's own timeout still
# applies (allow_timeout_override; the thin client always sends what is left of its deadline),
# and a full queue waits at most 128 x one 64-row execution (~6 s here) before it rejects.
QUEUE = QueuePolicy(max_queue_size=128, default_timeout_us=0)
# The generator as a step of other ensembles (product_detail, ad_creative, the gpu target) keeps
# a queue timeout: with several steps, each one's wait must be bounded for callers without one.
STEP_QUEUE = QueuePolicy(max_queue_size=128, default_timeout_us=5_000_000)

GENERATOR = NetworkSpec(
    name="product_gan_generator",
    inputs=(
        TensorSpec("z", "FP32", (LATENT_DIM,)),
        # One-hot rather than an index: TensorRT has mis-served batched Gather/Embedding.
        TensorSpec("class_onehot", "FP32", (len(PRODUCT_CLASSES),), value_range=(0.0, 1.0), kind="onehot"),
    ),
    outputs=(TensorSpec("image", "FP32", (3, *PRODUCT_IMAGE_HW), kind="image"),),
    max_batch_size=64,
    profile=OptimizationProfile(min_batch=1, opt_batch=32, max_batch=64),
    # As its own step (product_detail, ad_creative; every model on the gpu target), a short wait:
    # alone in an ensemble, a batched step waits its whole delay; with 2 ms here and on the pre
    # step, product_detail's latency was 1.30x the sum of its steps' compute (benchmarks/results,
    # 2026-12-02 product_detail). Under load the queue behind a busy instance batches anyway.
    batching=Batching(preferred_batch_sizes=(16, 32, 64), max_queue_delay_us=500),
    queue=STEP_QUEUE,
    gpu_instances=2,
)

# From the hot-path variants on this 2-core Xeon (perf_analyzer, single-row requests, with the
# queue above): 2 instances x 2 threads with no queue delay served 892 images/s at c=32 (p99
# 97 ms) and 353 at c=1 (p50 2.7 ms), against 562 and 174 for 1 x 2 with 2 ms: a second
# instance takes the next batch while the first returns its responses. (An earlier tune on a
# Zen 5 host, results/2026-11-26-amd-epyc-2c-tune.md, had picked 1 x 2 with 2 ms.)
BATCHING = Batching(preferred_batch_sizes=(64,), max_queue_delay_us=0)

# Shared by product_gan and product_detail, so it declares its own batching.
PRE = PythonStep(
    name="product_gan_pre",
    handler=f"{HANDLERS}.product_gan:Preprocess",
    inputs=contracts.PRODUCT_GAN.inputs,
    outputs=GENERATOR.inputs,
    params=(("num_classes", str(len(PRODUCT_CLASSES))), ("latent_dim", str(LATENT_DIM))),
    max_batch_size=contracts.PRODUCT_GAN.max_batch_size,
    # Cheap and first: pass requests on at once, the generator's queue does the batching.
    batching=Batching(preferred_batch_sizes=(64,), max_queue_delay_us=0),
)
POST = PythonStep(
    name="product_gan_post",
    handler=TO_UINT8,
    inputs=GENERATOR.outputs,
    outputs=contracts.PRODUCT_GAN.outputs,
)

PRODUCT_GAN = ServedModel(
    contract=contracts.PRODUCT_GAN,
    steps=(PRE, NetworkStep(GENERATOR), POST),
    batching=BATCHING,
    queue=QUEUE,
    module="ecomgen.models.product_gan",
    fused_cpu_instances=2,
    cpu_threads=2,
    # Chosen per host by measurement (ecomgen.serving.calibrate): OpenVINO bf16 won on a Zen 5
    # with avx512_bf16 (+71%), fp32 on a Xeon without AMX (bf16 slower there).
    cpu_runtime="auto",
    # One Python model on CPU hosts: pre, generator and post in one pass, one queue.
    fuse_on_cpu=True,
    deadline_us=5_000_000,
    training="training.product_gan",
    checkpoints=("product_gan.safetensors", "product_gan.json"),
)
