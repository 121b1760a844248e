"""Init-container gate: serve only TensorRT engines that passed the parity gate.

    python3 check_engines.py --configs /opt/ecomgen/model_repository/gpu --engines /engines --out /models

``export/tensorrt.py`` writes ``<model>/<version>/model.plan`` only after the parity gate passes,
next to a stamp ``model.plan.parity.json``::

    {"sha256": "<hex of model.plan>", "passed": true, "tensorrt": "10.5.0", "gpu": "<name>", "report": "..."}

This script assembles the repository the server will load into ``--out`` (an emptyDir): it
copies the configs and Python steps from ``--configs`` (baked into the image), then, for every
model whose config is a TensorRT plan, copies the plan from ``--engines`` (the engine volume),
hashing the bytes it copies. It exits non-zero, and the pod never starts serving, when a plan
is missing, has no stamp, the stamp says the gate failed, the hash of the copied bytes differs
from the stamp, the plan was built by another TensorRT than this container's (a plan only
deserializes in the exact TensorRT version that built it), or, with ``--gpu``, it was built on
another GPU model. Copying the verified bytes, rather than checking a shared volume in place,
means nothing can swap a plan between the check and the load.

Standard library only, so it runs in any image that has python3.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

STAMP_SUFFIX = ".parity.json"
_CHUNK = 1 << 20
_PLATFORM = re.compile(r'^\s*platform\s*:\s*"tensorrt_plan"', re.MULTILINE)
_BACKEND = re.compile(r'^\s*backend\s*:\s*"tensorrt"', re.MULTILINE)
_FILENAME = re.compile(r'^\s*default_model_filename\s*:\s*"([^"]+)"', re.MULTILINE)
_TRT_LIB = "/usr/lib/x86_64-linux-gnu/libnvinfer.so.*.*.*"


class GateError(RuntimeError):
    """A plan may not be served; the message says which and why."""


@dataclass(frozen=True)
class Engine:
    model: str
    version: str
    filename: str

    @property
    def relpath(self) -> Path:
        return Path(self.model) / self.version / self.filename


def is_tensorrt_config(text: str) -> bool:
    return bool(_PLATFORM.search(text) or _BACKEND.search(text))


def tensorrt_engines(configs: Path) -> list[Engine]:
    """Every (model, version, file) of the TensorRT-plan models in the config tree."""
    engines = []
    for config in sorted(configs.glob("*/config.pbtxt")):
        text = config.read_text()
        if not is_tensorrt_config(text):
            continue
        match = _FILENAME.search(text)
        filename = match.group(1) if match else "model.plan"
        versions = sorted(p.name for p in config.parent.iterdir() if p.is_dir() and p.name.isdigit())
        for version in versions or ["1"]:
            engines.append(Engine(config.parent.name, version, filename))
    return engines


def container_tensorrt_version() -> str:
    """TensorRT of this container: NVIDIA's images export TRT_VERSION; else libnvinfer's soname."""
    version = os.environ.get("TRT_VERSION", "").strip()
    if version:
        return version
    libs = sorted(glob.glob(_TRT_LIB))
    if libs:
        return libs[-1].split("libnvinfer.so.", 1)[1]
    raise GateError(
        "cannot tell this container's TensorRT version: set TRT_VERSION or pass --tensorrt-version"
    )


def same_release(stamp: str, container: str) -> bool:
    """'10.5.0' matches '10.5.0' and '10.5.0.18': the stamp's fields are a prefix of the container's."""
    a, b = stamp.strip().split("."), container.strip().split(".")
    n = min(len(a), len(b))
    return n >= 3 and a[:n] == b[:n]


def normalise_gpu(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' and the node label 'NVIDIA-H100-80GB-HBM3' compare equal."""
    return re.sub(r"[\s_-]+", "-", name.strip()).lower()


def copy_hashed(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` (via a temp file + rename) and return the sha256 of the bytes written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def read_stamp(plan: Path) -> dict[str, object]:
    stamp_path = plan.with_name(plan.name + STAMP_SUFFIX)
    if not stamp_path.is_file():
        raise GateError(
            f"{plan}: no parity stamp {stamp_path.name}; build it with `python -m export.tensorrt`"
        )
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError) as e:
        raise GateError(f"{stamp_path}: unreadable stamp ({e})") from e
    if not isinstance(stamp, dict):
        raise GateError(f"{stamp_path}: the stamp is not a JSON object")
    return stamp


def check_stamp(plan: Path, stamp: dict[str, object], tensorrt: str, gpu: str | None) -> None:
    if stamp.get("passed") is not True:
        raise GateError(f"{plan}: the parity gate did not pass ({stamp.get('report', 'no report')})")
    built_with = str(stamp.get("tensorrt", ""))
    if not same_release(built_with, tensorrt):
        raise GateError(f"{plan}: built with TensorRT {built_with or '?'}, this container has {tensorrt}")
    if gpu is not None and normalise_gpu(str(stamp.get("gpu", ""))) != normalise_gpu(gpu):
        raise GateError(f"{plan}: built on GPU {stamp.get('gpu', '?')!r}, this pod expects {gpu!r}")
    sha = stamp.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise GateError(f"{plan}: the stamp has no valid sha256")


def assemble(configs: Path, engines: Path, out: Path, tensorrt: str, gpu: str | None = None) -> list[str]:
    """Build the served repository in ``out``; return one line per verified plan. Raises GateError."""
    wanted = tensorrt_engines(configs)
    if not wanted:
        raise GateError(f"{configs}: no TensorRT-plan model configs found")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(configs, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.plan", "*.plan.*"))
    lines = []
    for engine in wanted:
        plan = engines / engine.relpath
        if not plan.is_file():
            raise GateError(f"{plan}: missing; every TensorRT model needs a gated plan")
        stamp = read_stamp(plan)
        check_stamp(plan, stamp, tensorrt, gpu)
        dest = out / engine.relpath
        sha = copy_hashed(plan, dest)
        if sha != stamp["sha256"]:
            dest.unlink()
            raise GateError(f"{plan}: sha256 {sha} differs from the stamp's {stamp['sha256']}")
        lines.append(
            f"{engine.relpath}: ok (sha256 {sha[:12]}…, TensorRT {stamp['tensorrt']}, {stamp.get('gpu')})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=Path, required=True, help="the gpu repository without plans (image)")
    p.add_argument("--engines", type=Path, required=True, help="tree of <model>/<version>/model.plan + stamp")
    p.add_argument("--out", type=Path, required=True, help="where the served repository is assembled")
    p.add_argument("--tensorrt-version", default="auto", help="'auto': TRT_VERSION or libnvinfer's soname")
    p.add_argument("--gpu", default=os.environ.get("ECOMGEN_ENGINE_GPU") or None, help="expected GPU model")
    opt = p.parse_args(argv)
    try:
        tensorrt = container_tensorrt_version() if opt.tensorrt_version == "auto" else opt.tensorrt_version
        for line in assemble(opt.configs, opt.engines, opt.out, tensorrt, opt.gpu):
            print(line, flush=True)
    except GateError as e:
        print(f"check_engines: REFUSED: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"check_engines: every plan passed the gate; repository ready in {opt.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
