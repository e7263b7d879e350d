"""The documentation stands alone: every link in README.md, docs/ and the service READMEs points at a file of this
repository that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("services/*/README.md"))]


def test_every_link_in_the_documentation_is_a_file_of_the_repository() -> None:
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            path = target.split("#", 1)[0]
            if "://" in target or target.startswith("/") or not (page.parent / path).resolve().is_relative_to(ROOT):
                broken.append(f"{page.relative_to(ROOT)}: {target} (outside the repository)")
            elif path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_the_pages_and_their_links() -> None:
    assert {"architecture.md", "api.md", "events.md", "style.md", "operations.md"} <= {p.name for p in pages()}
    assert len(LINK.findall((ROOT / "README.md").read_text())) >= 10
