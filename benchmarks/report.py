"""The report: sections of tables, target checks, notes and figures, rendered as markdown and JSON.

Parts fill `Section`s with raw numbers; formatting happens only here, so the JSON keeps every
measured value and the markdown shows exactly those values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MISSING = "n/a"


@dataclass(frozen=True)
class Column:
    """A table column: the row key it shows, its header and a format spec for numbers."""

    key: str
    header: str
    fmt: str = ""


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        unknown = set(row) - {c.key for c in self.columns}
        if unknown:
            raise KeyError(f"table {self.title!r} has no column(s) {sorted(unknown)}")
        self.rows.append(row)

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.rows]

    def to_markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(c.header for c in self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        for row in self.rows:
            cells = [format_value(row.get(c.key), c.fmt) for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def format_value(value: Any, fmt: str = "") -> str:
    """A table cell: None shows as n/a, booleans as yes/no, numbers with `fmt`."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and fmt:
        return format(value, fmt)
    return str(value)


@dataclass
class Check:
    """A target the report must show: what was asked, what was measured, and whether it holds.

    `passed` is None when the check could not be made (for example TorchDEQ is not installed).
    """

    target: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "not checked"}[self.passed]


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class Section:
    """What one part contributes to the report."""

    name: str
    title: str
    summary: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, title: str) -> Table:
        for table in self.tables:
            if table.title == title:
                return table
        raise KeyError(f"section {self.name!r} has no table {title!r}")

    def targets_markdown(self) -> str:
        """The target checks as a markdown table under a bold title ("" without checks)."""
        if not self.checks:
            return ""
        rows = ["| target | measured | verdict |", "|---|---|---|"]
        rows += [f"| {c.target} | {c.measured} | {c.verdict} |" for c in self.checks]
        return "**Targets**\n\n" + "\n".join(rows)

    def to_markdown(self, level: int = 2) -> str:
        hashes = "#" * level
        parts = [f"{hashes} {self.title}"]
        if self.summary:
            parts.append(self.summary)
        if self.settings:
            parts.append(
                "Settings: " + "; ".join(f"{key} {value}" for key, value in self.settings.items())
            )
        parts.extend(table.to_markdown() for table in self.tables)
        if self.checks:
            parts.append(self.targets_markdown())
        parts.extend(f"![{f.caption}]({f.path})\n\n*{f.caption}*" for f in self.figures)
        if self.notes:
            parts.append("\n".join(f"- {note}" for note in self.notes))
        return "\n\n".join(parts)


@dataclass
class Report:
    """The whole run: the environment it ran in and one section per part."""

    environment: dict[str, str]
    command: str
    sections: list[Section] = field(default_factory=list)

    def to_markdown(self) -> str:
        env = "\n".join(f"| {key} | {value} |" for key, value in self.environment.items())
        head = (
            "# equilibria benchmark report\n\n"
            f"Produced by `{self.command}`.\n\n| | |\n|---|---|\n{env}"
        )
        return "\n\n".join([head, *(s.to_markdown() for s in self.sections)]) + "\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> Report:
        """The report `to_json` wrote."""
        data = json.loads(text)
        sections = []
        for s in data["sections"]:
            tables = [
                Table(t["title"], [Column(**c) for c in t["columns"]], t["rows"])
                for t in s["tables"]
            ]
            sections.append(
                Section(
                    name=s["name"],
                    title=s["title"],
                    summary=s["summary"],
                    settings=s["settings"],
                    tables=tables,
                    checks=[Check(**c) for c in s["checks"]],
                    figures=[Figure(**f) for f in s["figures"]],
                    notes=s["notes"],
                )
            )
        return cls(data["environment"], data["command"], sections)
