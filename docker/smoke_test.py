"""The CPU image's own tests, run inside a container started the way the CPU overlay runs the pod.

    podman run -d --name ecomgen-smoke --network none --read-only --user 10001:10001 \\
        --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp --shm-size 896m \\
        -v ./key:/etc/ecomgen:ro localhost/ecomgen-cpu:dev serve --no-build \\
        --repository=/opt/ecomgen/model_repository --address=0.0.0.0 --admin-key-file=/etc/ecomgen/admin-key
    podman exec -i ecomgen-smoke python - < docker/smoke_test.py

Checks what the image promises (non-root, read-only root, no compilers/pip/torch, Triton 2.51.0,
ready without network) and what it serves (product_gan, tryon, tryon_bytes, the admin APIs
behind the key). Uses only what the image has: the standard library, numpy, Pillow, tritonclient and
the installed ecomgen package (its readiness wait, ``ecomgen.launcher.spawn.wait_ready``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
from PIL import Image

from ecomgen.launcher.spawn import wait_ready

HTTP = "http://127.0.0.1:8000"
GRPC = "127.0.0.1:8001"
KEY_FILE = Path(os.environ.get("ECOMGEN_SMOKE_KEY_FILE", "/etc/ecomgen/admin-key"))
failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(name)


def main() -> int:
    try:
        waited = wait_ready(HTTP, 180, interval_s=0.5)
    except TimeoutError as e:
        raise SystemExit(f"FAIL: {e}") from e
    check("ready", True, f"waited {waited:.1f} s in the smoke test")
    check("non-root", os.getuid() != 0 and os.getgid() != 0, f"uid {os.getuid()} gid {os.getgid()}")
    try:
        Path("/opt/ecomgen/probe").write_text("x")
        check("read-only root filesystem", False, "/opt/ecomgen is writable")
    except OSError as e:
        check("read-only root filesystem", e.errno in (13, 30), str(e))
    tools = {t: shutil.which(t) for t in ("gcc", "cc", "g++", "clang", "make", "pip", "pip3")}
    check("no compilers or pip", not any(tools.values()), str({k: v for k, v in tools.items() if v}))
    check("no torch in the serving image", importlib.util.find_spec("torch") is None)
    check("no pip module", importlib.util.find_spec("pip") is None)
    wheels = [str(w) for d in ("/usr", "/opt") for w in Path(d).rglob("*.whl")]
    check("no wheels left in the image", not wheels, str(wheels[:3]))
    # os.path.exists: /root is 0700, so a cache there is invisible to this user (the Dockerfile
    # removes it; `podman run --user 0 ... ls /root` shows it).
    cache_dirs = ("/root/.cache", "/tmp/.cache", "/var/cache/apt/archives/partial", "/opt/venv/.cache")
    caches = [p for p in cache_dirs if os.path.exists(p) and any(Path(p).rglob("*"))]
    check("no package caches", not caches, str(caches))
    with urllib.request.urlopen(f"{HTTP}/v2", timeout=5) as r:
        version = json.loads(r.read())["version"]
    check("Triton 2.51.0", version == "2.51.0", version)
    # triton_<backend>_backend_shm_region_<uuid>: the Python-based backend `ecomgen` names its own.
    regions = [p.name for p in Path("/dev/shm").iterdir() if "_backend_shm_region_" in p.name]
    check("Python-backend regions in /dev/shm", len(regions) > 0, f"{len(regions)} regions")

    client = grpc.InferenceServerClient(GRPC)
    n = 4
    cls = grpc.InferInput("class_id", [n, 1], "INT32")
    cls.set_data_from_numpy(np.arange(n, dtype=np.int32).reshape(n, 1))
    seed = grpc.InferInput("seed", [n, 1], "INT64")
    seed.set_data_from_numpy(np.arange(n, dtype=np.int64).reshape(n, 1))
    images = client.infer("product_gan", [cls, seed]).as_numpy("image")
    check(
        "product_gan",
        images is not None
        and images.shape == (n, 64, 48, 3)
        and images.dtype == np.uint8
        and float(images.std()) > 1,
        f"{None if images is None else (images.shape, images.dtype)}",
    )

    rng = np.random.default_rng(0)
    pair = {k: rng.integers(0, 256, (1, 256, 192, 3), dtype=np.uint8) for k in ("person", "garment")}
    inputs = []
    for name, array in pair.items():
        inputs.append(grpc.InferInput(name, list(array.shape), "UINT8"))
        inputs[-1].set_data_from_numpy(array)
    dressed = client.infer("tryon", inputs, outputs=[grpc.InferRequestedOutput("image")]).as_numpy("image")
    shape = getattr(dressed, "shape", None)
    check("tryon", shape == (1, 256, 192, 3), f"{shape}")

    inputs = []
    for name, array in pair.items():
        buf = io.BytesIO()
        Image.fromarray(array[0]).save(buf, format="PNG")
        t = grpc.InferInput(name, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=np.object_))
        inputs.append(t)
    png = client.infer("tryon_bytes", inputs).as_numpy("image")
    size = Image.open(io.BytesIO(png.reshape(-1)[0])).size if png is not None else None
    check("tryon_bytes", size == (192, 256), f"PNG {size}")

    try:
        client.get_model_repository_index()
        check("admin API restricted without the key", False, "repository index answered")
    except Exception as e:  # the server's "This protocol is restricted" error
        check("admin API restricted without the key", "restricted" in str(e).lower(), str(e)[:120])
    if KEY_FILE.exists():
        key = KEY_FILE.read_text().strip()
        index = client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": key})
        check("admin API with the key", len(index.models) >= 3, f"{len(index.models)} models")
    print(f"{len(failures)} failure(s)" + (f": {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
