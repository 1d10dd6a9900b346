"""Rooms a person can hold (issue 27): no file over 350 lines and no function over 60 in
trainer/, sweeper/, reports/, as .ci/sizes.py measures them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "sizes.py"
# The modules of the CLI branch (sweeper/cli/ and the scheduling, SLURM, study and comparison
# modules): within the sizes now, whatever the other branches' files are.
CLI_BRANCH = ("sweeper/cli/", "sweeper/scheduler.py", "sweeper/devices.py", "sweeper/source.py", "sweeper/slurm",
              "sweeper/study.py", "sweeper/samplers.py", "sweeper/experiment", "sweeper/launch.py",
              "sweeper/options.py", "sweeper/predict.py", "sweeper/view.py", "sweeper/process.py",
              "reports/comparison.py")


def sizes(root: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True,
                          check=False)


# Until the merge of the branches that split the other large files (trainer/, the readers,
# reports/): the lead turns this into a plain test then.
@pytest.mark.xfail(strict=False, reason="other branches split their files; flipped at the merge")
def test_no_file_over_350_lines_and_no_function_over_60() -> None:
    done = sizes()
    assert done.returncode == 0, f"over the sizes:\n{done.stdout}"


def test_the_cli_branch_modules_are_within_the_sizes() -> None:
    done = sizes()
    assert done.returncode in (0, 1), done.stderr
    over = [line for line in done.stdout.splitlines() if line.startswith(CLI_BRANCH)]
    assert not over, "over the sizes:\n" + "\n".join(over)


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
