"""Every measurement in the README and docs/ is rendered from the committed benchmark report.

docs/performance.md, the README's summary and each generated block must equal what
`benchmarks.docs` renders from docs/performance.json, and no page may hold a markdown table of
measurements outside a generated block (a typed table would go stale without anyone noticing).
"""

import re
from pathlib import Path

import pytest

from benchmarks.docs import (
    BLOCK_END,
    BLOCK_START,
    README_END,
    README_START,
    block_marker,
    relative_link,
    render_docs,
    rewrite_blocks,
    rewrite_readme_summary,
)
from benchmarks.report import Check, Column, Report, Section, Table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p != DOCS)]

# Header words of a table that reports measurements; a measured cell starts with a number
# ("99.15", "8.0 / 7.8", "1.56 ± 0.81", ">51.7 (cap)", "43.7 MB").
MEASURED_HEADER = re.compile(
    r"\b(accuracy|nfe|evaluations|residual|ms|s|seconds|time|tokens/s|mb|kib|mib|memory|psnr|"
    r"bits/char|bpc|loss|ratio|speed|mse|rho|cosine|saved|measured|verdict)\b|%|@",
    re.I,
)
MEASURED_CELL = re.compile(r"^[>~<]?[-+]?\d")


def report() -> Report:
    return Report.from_json(DOCS.with_suffix(".json").read_text())


def without_generated(text: str) -> str:
    """`text` less its generated blocks, the README summary and fenced code."""
    text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), "", text, flags=re.S)
    text = re.sub(BLOCK_START.pattern + ".*?" + re.escape(BLOCK_END), "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of `text`, each a list of rows of stripped cells (header first)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def is_measurement_table(table: list[list[str]]) -> bool:
    """A table whose header or first column names a measured quantity (code spans aside) and
    whose other cells hold measured numbers."""
    labels = " ".join(table[0] + [row[0] for row in table[1:] if row])
    cells = [cell.strip("*") for row in table[1:] for cell in row[1:]]
    return bool(MEASURED_HEADER.search(re.sub(r"`[^`]*`", "", labels))) and any(
        MEASURED_CELL.match(cell) for cell in cells
    )


def test_the_performance_report_is_rendered_from_its_json():
    assert DOCS.read_text() == render_docs(report(), ROOT, DOCS), (
        "docs/performance.md differs from docs/performance.json: run python -m benchmarks.docs "
        "--refresh (and never edit the generated report by hand)"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_generated_blocks_match_the_committed_json(page):
    text = page.read_text()
    expected = rewrite_blocks(text, report(), relative_link(DOCS, page))
    if page.name == "README.md":
        expected = rewrite_readme_summary(expected, report(), "docs/performance.md")
    assert text == expected, (
        f"a generated block of {page.name} differs from docs/performance.json: run "
        "python -m benchmarks.docs --refresh"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_measurement_table_outside_a_generated_block(page):
    typed = [t for t in tables(without_generated(page.read_text())) if is_measurement_table(t)]
    assert not typed, (
        f"{page.name} holds a table of measurements that no benchmark wrote (header "
        f"{typed[0][0] if typed else ''}); put it in a generated block or remove it"
    )


def test_the_readme_shows_generated_numbers():
    text = (ROOT / "README.md").read_text()
    assert README_START in text and README_END in text


def test_the_table_detector():
    measured = tables(
        "| model | test accuracy % | train s |\n|---|---|---|\n| DEQ | 99.15 | 69.6 |"
    )
    config = tables("| key | default | what |\n|---|---|---|\n| `lm.seq_len` | 128 | length |")
    files = tables("| file | what |\n|---|---|\n| `curves.png` | loss per epoch |")
    keys = tables("| option | default |\n|---|---|\n| `--seconds S` | 60 |")
    transposed = tables("| cap | 1 | 2 |\n|---|---|---|\n| seed 0, accuracy % | 96.3 | 98.3 |")
    assert is_measurement_table(transposed[0]) and not is_measurement_table(keys[0])
    assert is_measurement_table(measured[0])
    assert not is_measurement_table(config[0]) and not is_measurement_table(files[0])
    for cell in ("8.0 / 7.8", "1.5653 ± 0.8138", "92 + 87", "43.7 MB", ">51.7 (cap)", "2.86x"):
        assert MEASURED_CELL.match(cell), cell


def _tiny_report() -> Report:
    section = Section("a", "Part a: numbers", settings={"measured": "day 1", "command": "`run`"})
    table = Table("Numbers", [Column("x", "x ms", ".1f")])
    table.add(x=2.5)
    section.tables.append(table)
    section.checks.append(Check("x small", "x = 2.5", True))
    return Report(environment={}, command="run", sections=[section])


def test_a_block_is_rendered_from_the_section_it_names_and_an_edit_is_caught():
    page = f"# page\n\n{block_marker('a', table='Numbers')}\nstale\n{BLOCK_END}\n\nafter\n"
    fresh = rewrite_blocks(page, _tiny_report(), "performance.md")
    assert "| 2.5 |" in fresh and "stale" not in fresh and fresh.endswith(f"{BLOCK_END}\n\nafter\n")
    assert "[Part a: numbers](performance.md#part-a-numbers)" in fresh
    assert rewrite_blocks(fresh, _tiny_report(), "performance.md") == fresh
    edited = fresh.replace("| 2.5 |", "| 2.4 |")
    assert rewrite_blocks(edited, _tiny_report(), "performance.md") != edited
    targets = rewrite_blocks(f"{block_marker('a', targets=True)}\n{BLOCK_END}", _tiny_report(), "p")
    assert "| x small | x = 2.5 | met |" in targets and "| 2.5 |" not in targets
    with pytest.raises(KeyError, match="no section 'b'"):
        rewrite_blocks(f"{block_marker('b')}\n{BLOCK_END}", _tiny_report(), "p")
