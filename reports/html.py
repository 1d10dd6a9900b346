"""`report.html`: the report's markdown as one self-contained page (its plots inline as base64
PNGs, nothing it needs beside it), so it opens anywhere and can be mailed.

The markdown is the reporter's own (`reports.markdown`): headings, paragraphs, pipe tables,
images, `code` and **bold**; this renders exactly that, fast enough for a 10,000-row table.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from reports.markdown import METHOD

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; white-space: nowrap; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; display: block; }
p { max-width: 75em; } code { background: #f3f3f3; padding: 0 3px; }
ul.lead { font-size: 15px; background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.6em 1em 0.6em 2em; }
summary { cursor: pointer; } summary h2 { display: inline; border: none; }
"""
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    if "`" not in text and "*" not in text and "](" not in text:  # most table cells: numbers
        return text
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def _table(lines: list[str]) -> str:
    header, align, body = _cells(lines[0]), _cells(lines[1]), [_cells(line) for line in lines[2:]]
    cls = [' class="num"' if a.endswith(":") else "" for a in align]
    out = ["<table>", "<thead><tr>" + "".join(f"<th{c}>{_inline(h)}</th>" for h, c in zip(header, cls, strict=False))
           + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td{c}>{_inline(v)}</td>" for v, c in zip(row, cls, strict=False)) + "</tr>" for row in body]
    return "\n".join([*out, "</tbody>", "</table>"])


def _image(alt: str, src: str, base: Path) -> str:
    path = base / src
    if "://" not in src and path.is_file():
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img src="{html.escape(src)}" alt="{html.escape(alt)}"></p>'


def to_html(markdown: str, base: Path, *, title: str) -> str:
    """The markdown as a page, every local image (relative to `base`) inlined."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    body = []
    folded = False
    for block in blocks:
        first = block[0]
        if first == f"## {METHOD}":  # the method notes: the last section, folded away under the answer and tables
            body.append(f"<details>\n<summary><h2>{_inline(METHOD)}</h2></summary>")
            folded = True
        elif first.startswith("## "):
            body.append(f"<h2>{_inline(first[3:])}</h2>")
        elif first.startswith("# "):
            body.append(f"<h1>{_inline(first[2:])}</h1>")
        elif first.startswith("|") and len(block) >= 2:
            body.append(_table(block))
        elif len(block) == 1 and (image := _IMAGE.match(first)):
            body.append(_image(image.group(1), image.group(2), base))
        elif all(line.startswith("- ") for line in block):
            lead = not any(b.startswith("<h2>") for b in body)  # the answer, before any section
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in block)
            body.append(("<ul class=\"lead\">" if lead else "<ul>") + items + "</ul>")
        else:
            body.append(f"<p>{_inline(' '.join(block))}</p>")
    if folded:
        body.append("</details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
