"""``ecomgen serve`` runs the model repository on the embedded Triton; other commands by name.

python -m ecomgen serve                      # build if needed, serve on 127.0.0.1:8001/8000/8002
python -m ecomgen serve --grpc-port 9001 --http-port 9000 --metrics-port 9002
python -m ecomgen build                      # export ONNX, calibrate the CPU runtimes, write configs
python -m ecomgen verify FILE...             # provenance of a generated image (XMP, C2PA, watermark)

``build`` lives in ``export`` (it needs torch and the training checkpoints); the serving package
finds it through the ``ecomgen.commands`` entry point instead of importing it, so ``ecomgen serve
--no-build`` runs on an install without torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from ecomgen.launcher import add_serve_arguments, serve
from ecomgen.spec import CPU_RUNTIMES

log = logging.getLogger("ecomgen")
COMMANDS_GROUP = "ecomgen.commands"
# Relative to the working directory: `make serve` runs in the checkout; images pass --repository.
DEFAULT_REPOSITORY = Path("model_repository")


def command(name: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` registered for ``name`` under the ``ecomgen.commands`` entry points."""
    for ep in entry_points(group=COMMANDS_GROUP):
        if ep.name == name:
            main: Callable[[list[str]], int] = ep.load()
            return main
    raise SystemExit(
        f"ecomgen {name}: command not installed (it comes with the source checkout: pip install -e .)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if argv and argv[0] not in ("serve", "verify", "-h", "--help"):
        return command(argv[0])(argv[1:])
    p = argparse.ArgumentParser(
        prog="ecomgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the cpu repository on the embedded tritonserver")
    s.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    s.add_argument("--no-build", action="store_true", help="serve the repository as it is")
    s.add_argument(
        "--cpu-runtime",
        choices=CPU_RUNTIMES,
        default="auto",
        help="override the calibrated CPU runtime of every network (default: the per-host choice)",
    )
    add_serve_arguments(s)
    sub.add_parser("build", help="export ONNX files, calibrate CPU runtimes, write the repositories")
    v = sub.add_parser("verify", help="report the provenance of generated images (XMP, C2PA, watermark)")
    v.add_argument("files", nargs="+", type=Path)
    opt = p.parse_args(argv)
    if opt.command == "verify":
        from ecomgen.verify import main as verify_main

        return verify_main([str(f) for f in opt.files])
    if not opt.no_build:
        command("build")(["--repository", str(opt.repository)])
    if opt.cpu_runtime != "auto":
        from ecomgen.serving.runners import RUNTIME_ENV

        os.environ[RUNTIME_ENV] = opt.cpu_runtime  # tritonserver and its Python stubs inherit it
    return serve(opt, opt.repository / "cpu")
