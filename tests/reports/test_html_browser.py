"""report.html in a real headless browser (Chromium): it loads on its own, every table and
image renders, and a screenshot of it is saved for a person to look at."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.build import generate
from tests.reports.test_report import sweep  # noqa: F401 - the fixture

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt}));
  const tables = [...document.querySelectorAll("table")].map(t => t.rows.length);
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({images, tables, external: [...document.querySelectorAll("[src]")]
    .map(e => e.getAttribute("src")).filter(s => !s.startsWith("data:"))});
  document.body.appendChild(out);
});
</script>"""


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here: `apt-get install chromium` (.ci/run does)")
def test_report_html_renders_every_table_and_image_in_chromium(sweep: tuple[Path, dict], tmp_path: Path) -> None:  # noqa: F811
    runs, _ = sweep
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs)
    page = runs / "demo" / "report.html"
    html = page.read_text()
    # self-contained: move it away from its PNGs, and it still has them
    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    alone.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _browser("--dump-dom", alone.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    md = (runs / "demo" / "report.md").read_text()
    assert len(probe["tables"]) == md.count("\n| --- ") + md.count("\n| ---: ")  # every markdown table, as a table
    assert all(rows >= 2 for rows in probe["tables"])
    assert len(probe["images"]) == md.count("![") >= 4
    assert all(i["complete"] and i["width"] > 100 for i in probe["images"]), probe["images"]
    assert probe["external"] == []
    shot = tmp_path / "report.png"
    _browser(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a page, not a blank
