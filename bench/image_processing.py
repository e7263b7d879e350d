"""Benchmark: processing time and peak memory of the images service's variant set (thumb, medium, large WebP) for a
24-megapixel photo, and for the largest picture the service accepts, each in a fresh process.

The bound: one picture is processed at a time per process (tasks.process_uploads), and its pixels are bounded
before decoding (imaging.MAX_PIXELS = 40 MP). The peak above the process's baseline is at most the decoded picture
(Pillow keeps RGB and RGBA at 4 bytes a pixel), twice over with alpha (Pillow resizes RGBA through a premultiplied
copy), plus the uploaded file (at most the largest slot, 15 MiB), plus 48 MiB: the resampling pass (at most a quarter
of the picture at 40 MP: the large variant's 1,600 px over a side of at least 6,325) and the variants and encoders.
At the pixel bound with alpha: 2 x 160 MB + 15 MiB + 48 MiB = 368 MiB per process. Each case checks its own bound.

Writes bench/reports/image_processing.md (and prints it). `--check CASE` measures one case once and fails when it
exceeds its bound (the test suite runs it for the 24 MP photo).

    uv run python bench/image_processing.py
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MiB = 1024 * 1024
REPORT = Path(__file__).parent / "reports" / "image_processing.md"


def make(case: str) -> tuple[bytes, str]:
    from PIL import Image

    if case == "24 MP JPEG photo (6000 x 4000)":
        size = (6000, 4000)
        noise = Image.effect_noise((size[0] // 4, size[1] // 4), 64).resize(size)
        picture = Image.merge("RGB", (noise, Image.linear_gradient("L").resize(size), noise))
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=90)
        return out.getvalue(), "image/jpeg"
    if case == "24 MP PNG (6000 x 4000, RGB)":
        picture = Image.linear_gradient("L").resize((6000, 4000)).convert("RGB")
        out = io.BytesIO()
        picture.save(out, "PNG")
        return out.getvalue(), "image/png"
    if "with alpha" in case:
        gradient = Image.linear_gradient("L").resize((8000, 5000) if "40 MP" in case else (6000, 4000))
        picture = Image.merge("RGBA", (gradient, gradient, gradient, gradient))
        out = io.BytesIO()
        picture.save(out, "PNG")
        return out.getvalue(), "image/png"
    raise ValueError(case)


def measure(case: str) -> dict[str, float]:
    """In this (fresh) process: the time and the peak resident memory above the baseline, for one variant set."""
    from gatherly.images import imaging

    data, content_type = make(case)
    # The peak so far was made by `make` (building the test picture); measure from a fresh high-water mark.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _rss()
    started = time.perf_counter()
    processed = imaging.process(data, content_type)
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    return {
        "file_mib": len(data) / MiB,
        "seconds": seconds,
        "peak_mib": (peak - baseline) / MiB,
        "width": processed.width,
        "height": processed.height,
        "variant_kib": sum(len(v) for v in processed.variants.values()) / 1024,
    }


def _rss() -> int:
    return _status_field("VmRSS")


def _peak_rss() -> int:
    return _status_field("VmHWM")


def _status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in /proc/self/status")


CASES = [
    "24 MP JPEG photo (6000 x 4000)",
    "24 MP PNG (6000 x 4000, RGB)",
    "24 MP PNG with alpha (6000 x 4000)",
    "40 MP PNG with alpha (8000 x 5000, the pixel bound)",
]


def run_case(case: str) -> dict[str, float]:
    """One measurement of `case` in a fresh process, with the case's bound (`bound_mib`)."""
    done = subprocess.run([sys.executable, __file__, "--case", case], check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout)
    decoded = result["width"] * result["height"] * 4 * (2 if "alpha" in case else 1)
    result["bound_mib"] = (decoded + result["file_mib"] * MiB + 48 * MiB) / MiB
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(measure(sys.argv[2])))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        # One run of one case, failing when it exceeds its bound (services/images/tests/test_memory_bound.py).
        result = run_case(sys.argv[2])
        print(json.dumps(result))
        if result["peak_mib"] > result["bound_mib"]:
            raise SystemExit(f"memory bound exceeded: {result['peak_mib']:.0f} > {result['bound_mib']:.0f} MiB")
        return
    from gatherly.images.imaging import MAX_PIXELS

    bound_mib = (2 * MAX_PIXELS * 4 + 15 * MiB + 48 * MiB) / MiB
    rows = []
    failed = []
    for case in CASES:
        runs = [run_case(case) for _ in range(3)]
        best = min(runs, key=lambda r: r["seconds"])
        worst_peak = max(r["peak_mib"] for r in runs)
        case_bound = best["bound_mib"]
        holds = worst_peak <= case_bound
        if not holds:
            failed.append(case)
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        rows.append(
            f"| {case} | {best['file_mib']:.1f} MiB | {best['seconds']:.2f} s (of {times}) | {worst_peak:.0f} MiB | "
            f"{case_bound:.0f} MiB: {'holds' if holds else 'EXCEEDED'} |"
        )
    report = "\n".join(
        [
            "# Image processing: time and peak memory per variant set",
            "",
            f"`bench/image_processing.py`, {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs (shared with other work). Each case runs three times in a fresh process: "
            "check, decode, orient, and encode thumb (160 px square), medium (640 px) and large (1600 px) WebP. "
            "Time is the fastest run; memory is the largest peak resident set above the process's baseline "
            "(VmHWM after resetting it, so building the test picture does not count).",
            "",
            "Bound of a case: its decoded pixels at 4 bytes each (Pillow's layout for RGB and RGBA), twice with alpha "
            "(Pillow resizes RGBA through a premultiplied copy), + the file + 48 MiB for the resampling pass, the "
            "variants and the encoders. Per process, at the pixel "
            f"bound (40 MP with alpha, a 15 MiB upload): {bound_mib:.0f} MiB.",
            "",
            "| picture | file | time | peak memory | bound |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "A JPEG is decoded at a reduced DCT scale (`Image.draft`) when the large variant needs fewer pixels, so a "
            "24 MP photo decodes at 3000 x 2000; PNG, WebP and GIF have no such scale and decode whole.",
        ]
    )
    REPORT.write_text(report + "\n")
    print(report)
    if failed:
        raise SystemExit(f"memory bound exceeded: {', '.join(failed)}")


if __name__ == "__main__":
    main()
