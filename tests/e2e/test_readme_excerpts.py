"""The README's tables for health checks, outbound PROXY and client-IP sources are excerpts of
measured tables.

`test_health_checks.py`, `test_upstream_proxy.py` and `test_client_ip_comparison.py` measure
the tables of docs/health-checks.md, docs/outbound-proxy.md and docs/client-ip-sources.md on
every run and fail when a documented row differs from what Envoy, HAProxy and nginx did. The README restates a few rows of each: here every README row, and the
header, must be one of the document's rows, verbatim (spacing aside), so the README cannot claim
a row no run produced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _rows(lines: list[str]) -> list[tuple[str, ...]]:
    """Markdown table lines as tuples of stripped cells (separator lines dropped)."""
    rows = []
    for line in lines:
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        if all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def readme_excerpt(name: str) -> list[tuple[str, ...]]:
    text = README.read_text()
    start = f"<!-- readme-excerpt:{name} -->"
    assert start in text, f"README.md has no {start} block"
    block = text.split(start, 1)[1].split("<!-- /readme-excerpt -->", 1)[0]
    return _rows([line for line in block.splitlines() if line.strip().startswith("|")])


def doc_table(doc: str, first_cell: str) -> list[tuple[str, ...]]:
    """Every row of the document's table whose header starts with `first_cell`."""
    lines = (REPO / "docs" / doc).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_cell} |"):
            table = []
            for row in lines[i:]:
                if not row.startswith("|"):
                    break
                table.append(row)
            return _rows(table)
    raise AssertionError(f"docs/{doc} has no table headed | {first_cell} |")


@pytest.mark.parametrize(
    "excerpt, doc, first_cell",
    [
        ("health-checks", "health-checks.md", "Build"),
        ("outbound-proxy", "outbound-proxy.md", "rule"),
        ("client-ip", "client-ip-sources.md", "#"),
    ],
)
def test_readme_rows_are_measured_rows(excerpt, doc, first_cell):
    rows = readme_excerpt(excerpt)
    measured = doc_table(doc, first_cell)
    assert len(rows) >= 3, rows
    assert rows[0] == measured[0], f"README header {rows[0]} is not docs/{doc}'s {measured[0]}"
    missing = [row for row in rows[1:] if row not in measured[1:]]
    assert not missing, f"README rows that docs/{doc}'s measured table does not hold: {missing}"
