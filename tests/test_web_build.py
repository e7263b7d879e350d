"""The web app's build is cached: a second `make up` without changes neither installs nor builds it again, and a
change to what the build reads does (make's own view, asked with --question and --dry-run; nothing is built here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def built() -> None:
    if _make("--question", "web").returncode != 0:
        raise AssertionError("web/dist is missing or older than its sources: run `make web` (make test does)")


def test_a_second_make_up_without_changes_starts_gatherly_without_installing_or_building(built: None) -> None:
    dry = _make("--dry-run", "up")
    assert dry.returncode == 0, dry.stderr
    assert "gatherly up" in dry.stdout
    assert "npm ci" not in dry.stdout
    assert "vite build" not in dry.stdout


@pytest.mark.parametrize(
    "changed", ["web/src/texts.ts", "web/public/push-sw.js", "web/index.html", "web/vite.config.ts"]
)
def test_a_changed_source_is_built_again_without_reinstalling(built: None, changed: str) -> None:
    dry = _make("--dry-run", "up", f"--what-if={changed}")
    assert "vite build" in dry.stdout
    assert "npm ci" not in dry.stdout


def test_a_changed_lockfile_installs_and_builds_again(built: None) -> None:
    dry = _make("--dry-run", "up", "--what-if=web/package-lock.json")
    assert "npm ci" in dry.stdout
    assert "vite build" in dry.stdout


def test_web_check_fails_when_the_typed_client_drifts_from_the_openapi_schema(tmp_path: Path) -> None:
    drifted = tmp_path / "schema.d.ts"
    drifted.write_text((ROOT / "web/src/api/schema.d.ts").read_text() + "export type Stale = 1;\n")
    check = _make("web-check", f"WEB_CLIENT={drifted}")
    assert check.returncode != 0
    assert "drifted from docs/openapi.json: run make web-client" in check.stdout + check.stderr


def _lint(source: str) -> subprocess.CompletedProcess[str]:
    command = ["npx", "eslint", "--max-warnings", "0", "--stdin", "--stdin-filename", "src/pages/Probe.tsx"]
    return subprocess.run(command, cwd=ROOT / "web", input=source, capture_output=True, text=True, timeout=120)


def test_the_linter_refuses_texts_written_into_the_markup_instead_of_texts_ts() -> None:
    written_in = """export function Probe() {
  return (
    <section aria-label="Upcoming">
      <h2>Hello there</h2>
      <input placeholder={'Your name'} title="x1" />
    </section>
  );
}
"""
    refused = _lint(written_in)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.count("A text people read: put it in src/texts.ts") == 4, refused.stdout

    from_texts = """import { texts } from '../texts';
export function Probe() {
  return (
    <section aria-label={texts.appName} className="upcoming">
      <h2>{texts.appName}</h2>
      <input placeholder={texts.profile.name} type="text" />
    </section>
  );
}
"""
    accepted = _lint(from_texts)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
