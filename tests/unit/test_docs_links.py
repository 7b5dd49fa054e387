"""Every relative link in the README, docs/ and the clients' and examples' READMEs points at a file
that exists (and anchors at a heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("clients/*/README.md")),
    *sorted(ROOT.glob("examples/*/README.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#+\s+(.*)$", re.MULTILINE)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    for heading in HEADING.findall(markdown):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def _relative_links(doc: Path) -> list[str]:
    return [
        link
        for link in LINK.findall(doc.read_text())
        if not re.match(r"[a-z][a-z0-9+.-]*:", link) and not link.startswith("//")
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for link in _relative_links(doc):
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        missing_anchor = (
            target.exists() and bool(anchor) and anchor not in _anchors(target.read_text())
        )
        if not target.exists() or missing_anchor:
            broken.append(link)
    assert broken == [], f"{doc.name} links to what does not exist: {broken}"


def test_the_check_sees_links() -> None:
    assert "docs/protocol.md" in _relative_links(ROOT / "README.md")
