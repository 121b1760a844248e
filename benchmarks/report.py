"""What every benchmark's result files share: their names, the JSON twin, and the Markdown pieces
(number formatting, bullets, the machine and command lines, tables).

Files are ``benchmarks/results/<date>-<machine>[-kind].{md,json,png}``; ``machine`` is a slug of the
CPU model and the CPUs visible (:func:`machine_slug`), from the facts ``benchmarks.harness.machine_info``
gathers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.paths import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

GPU_LINE = (
    "GPU: none. These scripts serve the cpu target (embedded Triton, CPU runtimes), so every number "
    "here is CPU-only; GPU numbers come from `python -m benchmarks.gpu` on a GPU host."
)


def fmt(x: float | None, digits: int = 1) -> str:
    """``1,234.5``; ``–`` for a missing value or NaN."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def bullet(line: str) -> str:
    """``"GPU: none. ..."`` -> ``"- **GPU**: none. ..."``."""
    head, _, rest = line.partition(":")
    return f"- **{head.strip('*')}**:{rest}"  # callers may already bold the head


def table(columns: Sequence[str], rows: Iterable[Sequence[object] | str], align: str = "") -> list[str]:
    """A Markdown table as lines: a header, then one line per row (cells as ``str``; a row that is a
    string is a line as it is). ``align``: a letter per column, ``l`` (the default for columns it
    does not cover) or ``r`` (numbers)."""
    align = align.ljust(len(columns), "l")
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return [_row(columns), rule, *(row if isinstance(row, str) else _row(row) for row in rows)]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (the Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def stacked_bar(ax: Any, y: float, parts: Mapping[str, float], colours: dict[str, str]) -> float:
    """One horizontal bar of ``parts`` (name -> length) end to end at ``y``; each name keeps one colour
    across bars (``colours``, filled as names appear) and is labelled once. The bar's length."""
    left = 0.0
    for name, value in parts.items():
        new = name not in colours
        colour = colours.setdefault(name, f"C{len(colours) % 10}")
        ax.barh(y, value, left=left, color=colour, label=name if new else None)
        left += value
    return left


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['description']}; {info['cpus']} CPUs visible to the benchmark, {info['memory_gib']} GiB RAM; "
        f"bf16 hardware: {'yes' if info['has_bf16'] else 'no'}, AMX: {'yes' if info['has_amx'] else 'no'}"
    )


def run_lines(info: Mapping[str, Any], wall_s: float, command: str = "", date: str = "") -> list[str]:
    """A report's **Date**, **Command** (with how long it took) and **Machine** bullets; the command
    and date default to the running command and today."""
    return [
        f"- **Date**: {date or today()}",
        f"- **Command**: `{command or command_line()}` (took {wall_s / 60:.1f} min)",
        f"- **Machine**: {machine_line(info)}",
    ]


def machine_slug(info: Mapping[str, Any]) -> str:
    """``intel-r-xeon-r-processor-2c``: CPU model and visible CPUs, for result file names."""
    name = re.sub(r"[^a-z0-9]+", "-", str(info["model"]).lower()).strip("-")
    return f"{name}-{info['cpus']}c"


def today() -> str:
    return dt.date.today().isoformat()


def result_stem(kind: str, info: Mapping[str, Any]) -> str:
    """``<date>-<machine>`` (+ ``-kind``), the file-name stem of every results file."""
    stem = f"{today()}-{machine_slug(info)}"
    return f"{stem}-{kind}" if kind else stem


def command_line() -> str:
    """The command that is running, as one would retype it from the repository root."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {argv[0]}"
    return " ".join([prog, *map(_quote, argv[1:])])


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=,@+-]+", arg) else json.dumps(arg)


def newest(pattern: str, directory: Path = RESULTS_DIR) -> Path | None:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
