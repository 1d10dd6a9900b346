"""`report.html`: the report's markdown as one self-contained page (its plots inline as base64
PNGs, no file or network it needs beside it), so it opens anywhere and can be mailed."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; white-space: nowrap; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td[style*="right"], th[style*="right"] { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
p { max-width: 75em; } code { background: #f3f3f3; padding: 0 3px; }
"""


def _inline(match: re.Match[str], base: Path) -> str:
    src = html.unescape(match.group(2))
    path = base / src
    if "://" in src or src.startswith("data:") or not path.is_file():
        return match.group(0)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'{match.group(1)}"data:image/png;base64,{data}"'


def to_html(markdown: str, base: Path, *, title: str) -> str:
    """The markdown rendered (CommonMark with tables), every local image read from `base` inlined."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = re.sub(r'(<img src=)"([^"]+)"', lambda m: _inline(m, base), body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")
