"""``ecomgen verify FILE...``: which AI-generated labels an image carries.

For each file it prints the XMP ``Iptc4xmpExt:DigitalSourceType``, the C2PA manifest (valid, trusted,
invalid or absent; signer; digital source type) and ecomgen's invisible watermark (found or not, and
how many of its 48 bits agree). Exit status 0 when every file carries all three, 1 otherwise, 2 when
a file cannot be read.

Trust: a manifest is "valid" when its signature and hashes check out, and "trusted" as well when its
certificate chains to an anchor in ``--trust-anchors`` (or ``$ECOMGEN_C2PA_TRUST_ANCHORS``), a PEM file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ecomgen.creative.provenance import ENV_TRUST, PAYLOAD_BITS, VerifyReport, verify


def _lines(path: Path, r: VerifyReport) -> list[str]:
    out = [f"{path}: {r.format or 'unreadable'}"]
    out += [f"  error: {e}" for e in r.errors]
    out.append(f"  XMP DigitalSourceType: {r.xmp_source_type or 'absent'}")
    c = r.c2pa
    if c.state == "absent":
        out.append("  C2PA manifest: absent")
    else:
        out.append(f"  C2PA manifest: {c.state}")
        if c.signer or c.issuer:
            out.append(f"    signer: {c.signer or '?'} ({c.issuer or '?'})")
        if c.claim_generator:
            out.append(f"    claim generator: {c.claim_generator}")
        out.append(f"    digitalSourceType: {c.source_type or 'absent'}")
        shown = [p for p in c.problems if c.state in ("invalid", "error") or "untrusted" not in p]
        out += [f"    problem: {p}" for p in shown]
        if c.state == "valid" and any("untrusted" in p for p in c.problems):
            out.append("    (signature valid; the signer is not in the trust anchors given)")
    w = r.watermark
    if w is None:
        out.append("  watermark: not checked")
    else:
        agree = round(w.agreement * PAYLOAD_BITS)
        what = "found" if w.found else "absent"
        out.append(
            f"  watermark: {what} ({agree}/{PAYLOAD_BITS} bits agree, checksum {'ok' if w.crc_ok else 'bad'})"
        )
    out.append(f"  verdict: {'labelled as AI-generated (all three)' if r.ok else 'NOT fully labelled'}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ecomgen verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument(
        "--trust-anchors",
        type=Path,
        default=os.environ.get(ENV_TRUST) or None,
        help=f"PEM file of trusted C2PA root certificates (default: ${ENV_TRUST})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    args = p.parse_args(argv)
    anchors = args.trust_anchors.read_text() if args.trust_anchors else None
    status = 0
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as e:
            print(f"{path}: cannot read ({e.strerror})", file=sys.stderr)
            status = 2
            continue
        report = verify(data, anchors)
        if args.json:
            print(json.dumps({"file": str(path), "ok": report.ok, **asdict(report)}))
        else:
            print("\n".join(_lines(path, report)))
        if not report.ok and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
