"""Every promise anchored in docs/ is named by a test, every name is anchored, and
docs/promises.md is the current table (tests/promises.py)."""

from __future__ import annotations

from pathlib import Path

from tests import promises


def test_every_anchored_promise_has_a_test_and_every_marker_an_anchor() -> None:
    found = promises.problems(promises.doc_anchors(), promises.marked_claims())
    assert found == [], "\n".join(found)


def test_promises_table_is_current() -> None:
    expected = promises.render(promises.doc_anchors(), promises.marked_claims())
    assert promises.TABLE.read_text("utf-8") == expected, (
        "docs/promises.md is out of date: run python -m tests.promises --write"
    )


def test_the_checker_sees_a_missing_test_and_a_dangling_marker(tmp_path: Path) -> None:
    docs, tests = tmp_path / "docs", tmp_path / "tests"
    docs.mkdir()
    tests.mkdir()
    (docs / "ops.md").write_text(
        '<a id="p-kept"></a>Never skips.\n<a id="p-untested"></a>Always **answers** 202.\n'
    )
    (tests / "test_x.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.promise("p-kept")\ndef test_a(): ...\n\n'
        "class TestB:\n"
        '    @pytest.mark.promise("p-kept", "p-gone")\n    async def test_b(self): ...\n'
    )
    anchors, claims = promises.doc_anchors(docs), promises.marked_claims(tests)
    assert [a.summary for a in anchors] == ["Never skips.", "Always answers 202."]
    assert {c.test for c in claims if c.anchor == "p-kept"} == {
        "tests/test_x.py::test_a",
        "tests/test_x.py::test_b",
    }
    assert promises.problems(anchors, claims) == [
        "docs/ops.md:2: promise 'p-untested' has no test marked "
        '@pytest.mark.promise("p-untested")',
        "tests/test_x.py::test_b: names promise 'p-gone', which no doc anchors",
    ]
