"""Python code blocks of the README (Markdown) and of the Sphinx docs (reST), with their marks.

A block is run as written unless the line before it marks it:

- ``<!-- illustrative -->`` (Markdown) or ``.. illustrative`` (reST): only compiled;
- ``<!-- file: tests/test_x.py -->`` or ``.. file: tests/test_x.py``: one file of a small project.
  The files of one document are written together; pytest then runs its ``test_*.py`` files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.rst"))]

_MD_MARK = re.compile(r"^<!--\s*(illustrative|file:\s*(\S+))\s*-->$")
_RST_MARK = re.compile(r"^\.\.\s+(illustrative|file:\s*(\S+))\s*$")
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+code-block::\s*python3?\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the first line of code
    code: str
    illustrative: bool = False
    file: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """Every Python block of a Markdown or reST document."""
    lines = doc.read_text().splitlines()
    return _markdown(doc, lines) if doc.suffix == ".md" else _rest(doc, lines)


def _mark(doc: Path, lines: list[str], index: int, pattern: re.Pattern[str]) -> dict[str, object]:
    """The mark on the nearest non-blank line above ``index``."""
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    match = pattern.match(lines[above].strip()) if above >= 0 else None
    if match is None:
        return {}
    if match.group(2):
        return {"file": match.group(2)}
    return {"illustrative": True}


def _markdown(doc: Path, lines: list[str]) -> list[Block]:
    found = []
    index = 0
    while index < len(lines):
        if lines[index].strip() in ("```python", "```py"):
            start = index + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            code = "\n".join(lines[start:end]) + "\n"
            found.append(Block(doc, start + 1, code, **_mark(doc, lines, index, _MD_MARK)))  # type: ignore[arg-type]
            index = end
        index += 1
    return found


def _rest(doc: Path, lines: list[str]) -> list[Block]:
    found = []
    for index, line in enumerate(lines):
        directive = _RST_DIRECTIVE.match(line)
        if directive is None:
            continue
        indent = len(directive.group(1))
        body = index + 1
        while body < len(lines) and (not lines[body].strip() or lines[body].lstrip().startswith(":")):
            body += 1  # blank lines and directive options
        end = body
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
            end += 1
        code_lines = lines[body:end]
        while code_lines and not code_lines[-1].strip():
            code_lines.pop()
        strip = min((_indent(c) for c in code_lines if c.strip()), default=0)
        code = "\n".join(c[strip:] for c in code_lines) + "\n"
        found.append(Block(doc, body + 1, code, **_mark(doc, lines, index, _RST_MARK)))  # type: ignore[arg-type]
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
