"""Promises in docs/ traced to the tests that check them.

A normative statement in ``docs/*.md`` (a "must", a "never", a status code, a header, a limit,
a default) starts with an anchor ``<a id="p-some-name"></a>``. A test that checks it says so
with ``@pytest.mark.promise("p-some-name")``. ``docs/promises.md`` is the table of both,
generated from them; ``tests/unit/test_promises.py`` fails when an anchor has no test, when a
test names an anchor that is gone, or when the table is stale.

    python -m tests.promises            # check (exit 1 and say what is wrong)
    python -m tests.promises --write    # regenerate docs/promises.md

Pure text work: the tests are read with :mod:`ast`, never imported.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
TABLE = DOCS / "promises.md"

ANCHOR_RE = re.compile(r'<a id="(p-[a-z0-9-]+)"></a>')
# Anchors, bold markers (not the `***` of a masked value) and links (their text is kept).
_MARKUP_RE = re.compile(r"<a id=\"[^\"]*\"></a>|(?<!\*)\*\*(?!\*)|\[([^\]]*)\]\([^)]*\)")
_LEAD_IN_CHARS = 20
_SUMMARY_CHARS = 140


@dataclass(frozen=True, slots=True)
class Anchor:
    name: str
    doc: str  # e.g. "operations.md"
    line: int
    summary: str  # the promise's text, shortened


@dataclass(frozen=True, slots=True)
class Claim:
    anchor: str
    test: str  # "tests/unit/test_x.py::test_name"


def _summary(lines: Sequence[str], index: int, start: int) -> str:
    """The promise's text: its whole table row, or the first sentence of its paragraph (a
    bold lead-in such as "**Auth.**" does not count as a sentence)."""
    line = lines[index]
    row = line.lstrip().startswith("|")
    text = line if row else line[start:]
    if not row:
        for more in lines[index + 1 :]:
            if (
                not more.strip()
                or more.lstrip().startswith(("|", "#", "- ", "* ", "```"))
                or ANCHOR_RE.search(more)
            ):
                break
            text += " " + more.strip()
    plain = " ".join(_MARKUP_RE.sub(lambda m: m.group(1) or "", text).split())
    if row:
        plain = plain.strip(" |").replace(" | ", ": ", 1).replace(" | ", "; ")
    else:
        plain = plain.removeprefix("- ").removeprefix("* ")
        end = plain.find(". ", _LEAD_IN_CHARS)
        plain = plain[: end + 1] if end > 0 else plain
    if len(plain) > _SUMMARY_CHARS:
        plain = plain[: _SUMMARY_CHARS - 1].rstrip()
        plain += "`…" if plain.count("`") % 2 else "…"
    return plain.replace("|", "\\|")


def doc_anchors(docs: Path = DOCS) -> list[Anchor]:
    """Every promise anchor in docs/*.md (the generated table excluded), in document order."""
    found: list[Anchor] = []
    for path in sorted(docs.glob("*.md")):
        if path == docs / TABLE.name:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            for match in ANCHOR_RE.finditer(line):
                summary = _summary(lines, index, match.end())
                found.append(Anchor(match[1], path.name, index + 1, summary))
    return found


def _promise_names(node: ast.expr) -> list[str]:
    """The anchors in ``pytest.mark.promise("a", "b")``; [] for any other decorator."""
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "promise"
        and isinstance(func.value, ast.Attribute)
        and func.value.attr == "mark"
    ):
        return []
    return [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def marked_claims(tests: Path = TESTS) -> list[Claim]:
    """Every (anchor, test) pair named by a ``promise`` marker on a test function or class."""
    claims: list[Claim] = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(tests.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for decorator in node.decorator_list:
                    for name in _promise_names(decorator):
                        claims.append(Claim(name, f"{where}::{node.name}"))
    return claims


def problems(anchors: Sequence[Anchor], claims: Sequence[Claim]) -> list[str]:
    """What breaks the trace: duplicate anchors, untested anchors, markers naming nothing."""
    out: list[str] = []
    seen: dict[str, Anchor] = {}
    for anchor in anchors:
        if anchor.name in seen:
            first = seen[anchor.name]
            out.append(
                f"anchor {anchor.name!r} appears twice: docs/{first.doc}:{first.line} and "
                f"docs/{anchor.doc}:{anchor.line}"
            )
        seen[anchor.name] = anchor
    tested = {c.anchor for c in claims}
    for anchor in anchors:
        if anchor.name not in tested:
            out.append(
                f"docs/{anchor.doc}:{anchor.line}: promise {anchor.name!r} has no test "
                f'marked @pytest.mark.promise("{anchor.name}")'
            )
    for claim in claims:
        if claim.anchor not in seen:
            out.append(f"{claim.test}: names promise {claim.anchor!r}, which no doc anchors")
    return out


def render(anchors: Sequence[Anchor], claims: Sequence[Claim]) -> str:
    by_anchor: dict[str, list[str]] = {}
    for claim in claims:
        by_anchor.setdefault(claim.anchor, [])
        if claim.test not in by_anchor[claim.anchor]:
            by_anchor[claim.anchor].append(claim.test)
    rows = [
        f"| [`{a.name}`]({a.doc}#{a.name}) | {a.doc} | {a.summary} | "
        + "<br>".join(f"`{t}`" for t in sorted(by_anchor.get(a.name, [])))
        + " |"
        for a in anchors
    ]
    return (
        "# Promises and the tests that check them\n\n"
        "Generated by `python -m tests.promises --write` (or `make promises`); do not edit.\n"
        "Every normative statement in these docs starts with an anchor "
        '`<a id="p-…"></a>`, and every anchor is named by at least one test '
        '(`@pytest.mark.promise("p-…")`). `tests/unit/test_promises.py` fails when an '
        "anchor has no test, a test names an anchor that is gone, or this table is stale.\n\n"
        f"{len(anchors)} promises.\n\n"
        "| Promise | Doc | Statement | Tests |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main(argv: Sequence[str]) -> int:
    anchors, claims = doc_anchors(), marked_claims()
    table = render(anchors, claims)
    if "--write" in argv:
        TABLE.write_text(table, encoding="utf-8")
        print(f"wrote {TABLE.relative_to(ROOT)}: {len(anchors)} promises")
    found = problems(anchors, claims)
    if "--write" not in argv and (not TABLE.exists() or TABLE.read_text("utf-8") != table):
        found.append("docs/promises.md is out of date: run python -m tests.promises --write")
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
