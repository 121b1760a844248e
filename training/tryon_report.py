"""The try-on evaluation's markdown report (``training/results/tryon_eval.md``) from its JSON."""

from __future__ import annotations

from training.tryon_metrics import ARM_ERODE_PX, SKIN_DISTANCE, SLEEVE_MARGIN, SLEEVE_QUANTILE

ANCHORS = (
    ("CP-VTON (Wang et al., ECCV 2018), as reported by ACGPN", "0.745", "Yang et al., CVPR 2020, Table 1"),
    ("CP-VTON+ (Minar et al., CVPRW 2020)", "0.816", "Minar et al., CVPRW 2020, Table 1"),
    ("ACGPN (Yang et al., CVPR 2020)", "0.845", "Yang et al., CVPR 2020, arXiv:2003.05863, Table 1"),
    ("PF-AFN (Ge et al., CVPR 2021)", "0.89", "Ge et al., CVPR 2021, Table 1"),
    ("FS-VTON (He et al., CVPR 2022)", "0.91", "He et al., CVPR 2022"),
)


def _pct(x: float) -> str:
    return "–" if x != x else f"{x:.1%}"


def _stages(meta: dict) -> list[str]:
    out = []
    for name, s in meta.get("stages", {}).items():
        out.append(
            f"  - {name}: {s.get('iters')} iterations, {s.get('wall_time_s', 0) / 60:.0f} min, "
            f"`{s.get('command', '?')}` on {s.get('data', '?')}"
        )
    return out


def _split_check(check: dict | None) -> str:
    if not check:
        return "not checked"
    if check.get("identical") is None:
        return f"not checked ({check.get('reason')})"
    folders = ", ".join(f"{k} {v['same']}/{v['files']}" for k, v in check["folders"].items())
    verdict = "byte-identical" if check["identical"] else "DIFFERENT"
    same_pairs = check["pairs_file_identical"]
    return f"{verdict} (same SHA-1 per file: {folders}; test_pairs.txt identical: {same_pairs})"


def render(r: dict) -> str:
    meta = r["checkpoint"]
    lines = [
        "# tryon: evaluation on the VITON test split",
        "",
        f"- **Command**: `{r['command']}` ({r['wall_s'] / 60:.1f} min on {r['machine']}, {r['threads']} "
        "threads, PyTorch fp32 reference pipelines; the served ONNX steps match them within the parity "
        "tolerance of `tests/unit/test_tryon_export.py`)",
        f"- **Data**: {r['data']}. The full VITON set's test split (`data/viton-full/test`, placed by "
        f"`python -m training.viton_full`) against this one: {_split_check(r.get('test_split_check'))}.",
        f"- **Weights** (ours): `checkpoints/tryon_*.safetensors`, {meta.get('wall_time_s', 0) / 60:.0f} min "
        "of training on 2 CPU cores in four stages:",
        *_stages(meta),
        "- **Previous model (v1)**: the parser / flow warp / synthesis of commit d048d19 (3,000 train "
        "pairs, hard keep mask that replaces the arms), from `build/tryon_v1` (`training/tryon_v1.py`).",
        "- **Paired SSIM**: *pytorch-ssim* = Gaussian 11x11, sigma 1.5, zero padding, [0, 1] RGB (CP-VTON, "
        "ACGPN, PF-AFN lineage); *skimage* = `structural_similarity(gt, out, channel_axis=2, "
        "data_range=255)` defaults (7x7 uniform window, sample covariance, border cropped). PSNR on uint8.",
        "- **FCD**: Frechet distance between 128-d features of `training/classifier.py` (our product-photo "
        "classifier; no Inception weights offline) of 64x48 downscaled images: unpaired results vs the "
        "real test photos; the same feature space as the previous report, so the numbers compare.",
        "- **Garment transfer**: share of unpaired results whose torso colour (true upper-clothes region) "
        "is nearer the new garment's than the worn garment's (pairs with garments < 40 RGB units apart "
        "are skipped).",
        "- **Arm and hand preservation** (unpaired; `training/tryon_metrics.py::arm_preservation`): the "
        "person's arm pixels are the arms region of the test parse (LIP 14/15, which include the hands, "
        f"and 3), eroded by {ARM_ERODE_PX} px. Each is placed along its arm's OpenPose chain (0 shoulder, "
        "1 elbow, 2 wrist, > 2 hand; arms whose shoulder, elbow or wrist has confidence <= 0.1 are left "
        "out). The new garment's sleeve end s per arm is measured on the garment's own wearer in the test "
        f"split: the {SLEEVE_QUANTILE}th percentile of the positions of that wearer's visible arm pixels "
        f"(2.0 if that arm shows none). Pixels at position >= s + {SLEEVE_MARGIN} are *required* (no sleeve "
        "of this garment reaches them); a required pixel is *preserved* when the result there is within "
        f"{SKIN_DISTANCE:.0f} RGB units (Euclidean) of the input photo's pixel or of the median colour of "
        "the person's arm pixels. The number is preserved / required, pooled over all pixels.",
        "",
        "| method | paired SSIM (pytorch-ssim) | paired SSIM (skimage) | paired PSNR (dB) | unpaired FCD "
        "| garment transfer | arm + hand preservation |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['method']} | {row['ssim']:.4f} | {row['ssim_skimage']:.4f} | {row['psnr']:.2f} | "
            f"{row['fcd']:.2f} | {_pct(row['transfer'])} (n={row['transfer_n']}) | {_pct(row['arms'])} "
            f"({row['arms_pixels']:,} px, {row['arms_pairs']} pairs) |"
        )
    fl = r["floors"]
    lines.append(f"| floor: real test half vs half | | | | {fl['halves']:.2f} | | |")
    if "train" in fl:
        lines.append(f"| floor: real train vs real test | | | | {fl['train']:.2f} | | |")
    lines += [f"| {name} (published) | {v} | | | | | |" for name, v, _ in ANCHORS]
    lines += [
        "",
        "Published numbers are each paper's own measurement (its checkpoint, its SSIM code), so they are "
        "anchors, not a like-for-like comparison: " + "; ".join(f"{n}: {s}" for n, _, s in ANCHORS) + ".",
        "",
        "![unpaired: person | garment | paste | v1 | ours](tryon_eval.png)",
        "",
        "Rows: 8 of the grid's unpaired test pairs (every 4th): person | garment | ours | previous "
        "model (v1) | paste into the torso box.",
        "",
        "![32 unpaired held-out results](tryon_unpaired_grid.png)",
        "",
        "The 4x8 grid: the unpaired test pairs at positions floor(k * 2032 / 32), k = 0..31, of "
        "`test_pairs.txt` (a fixed rule, not picked); each cell is our result above the person and the "
        "garment at half size.",
        "",
        "Ablations (on the train hold-out): [tryon_ablation.md](tryon_ablation.md).",
        "",
        "Licence: the weights are research artifacts trained on VITON (research-only data).",
    ]
    return "\n".join(lines) + "\n"
