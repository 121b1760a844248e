"""``python -m benchmarks.tryon``: the ensemble benchmark of ``tryon`` (kept for ``make bench``).

The same as ``python -m benchmarks.ensemble --model tryon [options]``; see benchmarks/ensemble.py.
Writes ``benchmarks/results/<date>-<machine>-tryon.{md,json}``.

    python -m benchmarks.tryon
    python -m benchmarks.tryon --requests 20 --concurrency 1 --seconds 5 --out /tmp/b   # smoke
"""

from __future__ import annotations

import sys

from benchmarks.ensemble import main as ensemble_main


def main(argv: list[str] | None = None) -> int:
    return ensemble_main(["--model", "tryon", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
