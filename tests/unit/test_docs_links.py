"""Every relative link in README.md and docs/*.md points at a file that exists, and every
``#fragment`` at one of its target's headings (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# [text](target "title") and ![alt](target): the target up to a space or the closing paren.
_INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
# [label]: target
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+).+?\1")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            lines.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            lines.append("")
            continue
        lines.append(_CODE_SPAN.sub(lambda span: " " * len(span.group(0)), line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and _ (Unicode too)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """Every heading's anchor, repeats numbered the way GitHub does (``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    fence: str | None = None
    for line in document.read_text(encoding="utf-8").splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            continue
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(document: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the document's prose."""
    found: list[tuple[int, str]] = []
    for number, line in enumerate(prose_lines(document.read_text(encoding="utf-8")), start=1):
        found.extend((number, match.group(1)) for match in _INLINE.finditer(line))
        found.extend((number, match.group(1)) for match in _REFERENCE.finditer(line))
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the document's relative links, one line each."""
    problems: list[str] = []
    for number, target in links(document):
        if not target or _EXTERNAL.match(target):
            continue  # http(s), mailto and other schemes are not checked here
        path_part, _, fragment = target.partition("#")
        path = (document.parent / unquote(path_part)).resolve() if path_part else document
        where = f"{document.relative_to(root)}:{number}: {target}"
        if not path.exists():
            problems.append(f"{where}: no such file")
        elif fragment and path.suffix == ".md" and unquote(fragment) not in anchors(path):
            problems.append(f"{where}: no heading #{fragment} in {path.name}")
        elif fragment and path.suffix != ".md":
            problems.append(f"{where}: a fragment into a file that has no headings")
    return problems


def test_the_documents_are_found() -> None:
    names = {document.name for document in DOCUMENTS}
    assert {"README.md", "architecture.md", "configuration.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_slugs_follow_github() -> None:
    assert slug("Who answers STOP, START and HELP") == "who-answers-stop-start-and-help"
    assert slug("Delivery: the outbox") == "delivery-the-outbox"
    assert slug("`/verify` and `/challenge`") == "verify-and-challenge"
    assert slug("Trying a limit first: `monitor`") == "trying-a-limit-first-monitor"
    assert slug("snake_case and kebab-case") == "snake_case-and-kebab-case"


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "target.md"
    target.write_text("# Target\n\n## A section: here\n\n## A section: here\n", encoding="utf-8")
    source = tmp_path / "README.md"
    source.write_text(
        "[fine](docs/target.md#a-section-here) [repeat](docs/target.md#a-section-here-1)\n"
        "[self](#the-top) ![image](docs/missing.png) [web](https://example.com/x.md)\n"
        "[gone](docs/gone.md) [bad anchor](docs/target.md#nowhere)\n"
        "`[in code](docs/none.md)`\n\n"
        "```\n[in a fence](docs/none.md)\n```\n\n"
        "# The top\n",
        encoding="utf-8",
    )
    assert broken_links(source, root=tmp_path) == [
        "README.md:2: docs/missing.png: no such file",
        "README.md:3: docs/gone.md: no such file",
        "README.md:3: docs/target.md#nowhere: no heading #nowhere in target.md",
    ]
