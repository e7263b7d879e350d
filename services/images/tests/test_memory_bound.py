"""The memory bound of bench/reports/image_processing.md, held in the test suite: processing a 24-megapixel photo
(check, decode, orient, three WebP variants) in a fresh process peaks below its bound — its decoded pixels at 4 bytes
each + the file + 48 MiB — measured by the benchmark's own code (VmHWM above the process's baseline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[3] / "bench" / "image_processing.py"
PHOTO = "24 MP JPEG photo (6000 x 4000)"


def test_a_24_megapixel_photo_is_processed_within_its_memory_bound() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--check", PHOTO], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["width"], result["height"]) == (6000, 4000)
    assert 0 < result["peak_mib"] <= result["bound_mib"], result
    print(f"24 MP photo: {result['seconds']:.2f} s, peak {result['peak_mib']:.0f} MiB of {result['bound_mib']:.0f}")
