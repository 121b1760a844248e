"""Rebuild the shipped font subsets (a maintainer tool; serving only reads the output files).

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb /tmp/noto
    flock /tmp/ecomgen-cpu.lock .venv/bin/python -m ecomgen.creative.fonts.build_fonts \
        --dejavu /usr/share/fonts/truetype/dejavu --noto-cjk /tmp/noto/usr/share/fonts/opentype/noto

The character sets are documented in README.md next to this file; ``cjk_characters`` and
``DEJAVU_RANGES`` below are their exact definitions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

HERE = Path(__file__).resolve().parent

# Scripts DejaVu draws correctly without complex shaping (no Arabic, Hebrew, Indic: text.py rejects
# those because the layout is Pillow's basic one, without bidi or shaping).
DEJAVU_RANGES = [
    (0x0020, 0x007E),  # Basic Latin
    (0x00A0, 0x024F),  # Latin-1 Supplement, Latin Extended-A/B
    (0x0250, 0x02FF),  # IPA extensions, spacing modifier letters
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x052F),  # Cyrillic + supplement
    (0x1E00, 0x1EFF),  # Latin Extended Additional (Vietnamese)
    (0x1F00, 0x1FFF),  # Greek Extended
    (0x2000, 0x206F),  # General Punctuation
    (0x2070, 0x209F),  # super/subscripts
    (0x20A0, 0x20CF),  # currency symbols
    (0x2100, 0x218F),  # letterlike symbols, number forms
    (0x2190, 0x22FF),  # arrows, mathematical operators
    (0x25A0, 0x27BF),  # geometric shapes, misc symbols, dingbats (★ ✓ ♥)
    (0xFB00, 0xFB06),  # Latin ligatures
]
NOTO_FACE = 2  # index of "Noto Sans CJK SC" in NotoSansCJK-*.ttc (JP, KR, SC, TC, HK, mono...)


def _double_byte(codec: str, leads: range, trails: list[int]) -> set[str]:
    out = set()
    for a in leads:
        for b in trails:
            try:
                s = bytes([a, b]).decode(codec)
            except UnicodeDecodeError:
                continue
            if len(s) == 1:
                out.add(s)
    return out


def cjk_characters() -> set[str]:
    """The CJK subset's character set: national standards' common repertoires, from Python's codecs."""
    euc = list(range(0xA1, 0xFF))
    chars = _double_byte("gb2312", range(0xA1, 0xF8), euc)  # GB 2312: all 6,763 hanzi + symbols
    big5_trails = list(range(0x40, 0x7F)) + euc
    big5_level1 = {  # Big5 level 1, the 5,401 frequently used hanzi (0xA440-0xC67E)
        c for c in _double_byte("big5", range(0xA4, 0xC7), big5_trails) if 0x4E00 <= ord(c) <= 0x9FFF
    }
    chars |= big5_level1
    chars |= _double_byte("euc_jp", range(0xA1, 0xF5), euc)  # JIS X 0208: 6,355 kanji, kana, symbols
    hangul = {c for c in _double_byte("euc_kr", range(0xA1, 0xFE), euc) if 0xAC00 <= ord(c) <= 0xD7A3}
    chars |= hangul  # KS X 1001: the 2,350 common Hangul syllables
    for a, b in [
        (0x0020, 0x007E),  # ASCII and Latin-1, so mixed CJK/Latin titles use one design
        (0x00A0, 0x00FF),
        (0x2010, 0x2027),  # dashes, quotes, ellipsis
        (0x2030, 0x203B),
        (0x3000, 0x303F),  # CJK symbols and punctuation
        (0x3040, 0x30FF),  # Hiragana, Katakana
        (0x3130, 0x318F),  # Hangul compatibility jamo
        (0x31F0, 0x31FF),  # Katakana phonetic extensions
        (0xFF01, 0xFFEF),  # halfwidth and fullwidth forms
    ]:
        chars |= {chr(c) for c in range(a, b + 1)}
    return chars


def _options(hinting: bool, features: list[str]) -> subset.Options:
    opts = subset.Options()
    opts.layout_features = features
    opts.hinting = hinting
    opts.name_IDs = ["*"]  # keep copyright, licence and trademark records
    opts.name_languages = ["*"]
    opts.notdef_outline = True
    opts.drop_tables += ["vmtx", "vhea", "VORG", "BASE", "FFTM"]  # horizontal text only
    return opts


def build(dejavu: Path, noto_cjk: Path, out: Path) -> None:
    unicodes = [c for a, b in DEJAVU_RANGES for c in range(a, b + 1)]
    for name in ("DejaVuSans", "DejaVuSans-Bold"):
        font = TTFont(dejavu / f"{name}.ttf")
        sub = subset.Subsetter(_options(hinting=True, features=["*"]))
        sub.populate(unicodes=unicodes)
        sub.subset(font)
        font.save(out / f"{name}-Subset.ttf")
    # CFF hints cost ~1.1 MB here and matter little at ad sizes (>= 20 px); vertical tables unused.
    font = TTCollection(noto_cjk / "NotoSansCJK-Bold.ttc").fonts[NOTO_FACE]
    sub = subset.Subsetter(_options(hinting=False, features=["kern"]))
    sub.populate(unicodes=[ord(c) for c in cjk_characters()])
    sub.subset(font)
    font.save(out / "NotoSansCJKsc-Bold-Subset.otf")


def cmap_ranges(path: Path) -> list[list[int]]:
    """The font's best Unicode cmap as sorted [first, last] code-point ranges."""
    with TTFont(path, lazy=True) as f:
        cps = sorted(f.getBestCmap())
    ranges: list[list[int]] = []
    for c in cps:
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


def write_coverage(folder: Path) -> Path:
    """coverage.json: what text.py's coverage check reads at serving time (no fontTools needed there)."""
    out = folder / "coverage.json"
    data = {f.name: cmap_ranges(f) for f in sorted(folder.glob("*-Subset.*"))}
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dejavu", type=Path, default=Path("/usr/share/fonts/truetype/dejavu"))
    p.add_argument("--noto-cjk", type=Path, required=True, help="folder with NotoSansCJK-Bold.ttc")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args()
    build(args.dejavu, args.noto_cjk, args.out)
    write_coverage(args.out)
    for f in sorted(args.out.glob("*-Subset.*")):
        print(f"{f.name}: {f.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
