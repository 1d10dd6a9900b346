"""Rooms a person can hold (issue 27): no file over 350 lines and no function over 60 in
trainer/, sweeper/, reports/, as .ci/sizes.py measures them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "sizes.py"
def sizes(root: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True,
                          check=False)


def test_no_file_over_350_lines_and_no_function_over_60() -> None:
    done = sizes()
    assert done.returncode == 0, f"over the sizes:\n{done.stdout}"


def test_the_script_lists_a_long_file_and_a_long_function(tmp_path: Path) -> None:
    package = tmp_path / "sweeper"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (package / "long.py").write_text(f"@decorated\ndef long():\n{body}\n" + "\n" * 300)
    (package / "short.py").write_text("def short():\n    return 1\n")
    done = sizes(tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["sweeper/long.py: 362 lines (file > 350)",
                                        "sweeper/long.py:2 long: 62 lines (function > 60)"]
    (package / "long.py").write_text(f"def long():\n{body}\n")
    assert sizes(tmp_path).returncode == 1  # 61 lines
    (package / "long.py").write_text("def long():\n" + "\n".join(body.splitlines()[:59]) + "\n")
    done = sizes(tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "no file over 350 lines, no function over 60")
