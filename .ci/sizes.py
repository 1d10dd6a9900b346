#!/usr/bin/env python3
"""Files over MAX_FILE lines and functions over MAX_FUNCTION lines in trainer/, sweeper/, reports/.

Prints one offender a line (`path: N lines (file > 350)` or `path:LINE name: N lines (function >
60)`) and exits 1 if there is any, 0 if none. A function's length runs from its first decorator
(or its `def`) to its last line; a method is a function. Run by tests/test_sizes.py.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_FILE = 350
MAX_FUNCTION = 60
PACKAGES = ("trainer", "sweeper", "reports")
ROOT = Path(__file__).resolve().parent.parent


def offenders(root: Path = ROOT) -> list[str]:
    """Every file and function over its limit, as printable lines, in path order."""
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            text = path.read_text(encoding="utf-8")
            name = path.relative_to(root).as_posix()
            if (lines := len(text.splitlines())) > MAX_FILE:
                found.append(f"{name}: {lines} lines (file > {MAX_FILE})")
            for node in ast.walk(ast.parse(text, filename=name)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    length = (node.end_lineno or node.lineno) - start + 1
                    if length > MAX_FUNCTION:
                        found.append(f"{name}:{node.lineno} {node.name}: {length} lines (function > {MAX_FUNCTION})")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to measure (default: this one)")
    found = offenders(parser.parse_args().root)
    print("\n".join(found) or f"no file over {MAX_FILE} lines, no function over {MAX_FUNCTION}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
