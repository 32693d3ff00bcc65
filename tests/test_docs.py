"""The README and the reference pages in docs/: every link to a file of the repository names one
that exists, and every #anchor a heading of its page (GitHub's slugs)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def outside_code(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", outside_code(page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_local_link_and_anchor_exists(page):
    broken = []
    for target in LINK.findall(outside_code(page.read_text())):
        if re.match(r"https?:|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_newcomers_page():
    """The README stays short: what lota is, the two commands, the DAG, what to expect, where to read on."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "<!-- test-command -->" in text
    assert all(f"(docs/{page.name})" in text for page in PAGES[1:]), "every docs page is linked from the README"
