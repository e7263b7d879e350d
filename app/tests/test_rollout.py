"""The zero-downtime promise, with processes: bench/rollout.py replaces each of two groups replicas in turn while
clients keep writing and reading through a balancer that follows /readyz; nothing may fail, be lost or doubled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DRILL = Path(__file__).parents[2] / "bench" / "rollout.py"


def test_replacing_every_replica_under_traffic_fails_no_request_and_loses_no_write() -> None:
    result = subprocess.run(
        [sys.executable, str(DRILL), "--json", "--clients", "3"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["failed"] == []
    assert figures["writes_missing"] == 0
    assert figures["writes_doubled"] == 0
    assert len(figures["replacements"]) == 2, "both replicas were replaced"
    assert figures["writes"] >= 20, "traffic went on through the replacements"
