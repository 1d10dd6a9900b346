"""One owner per contract (issue 27): the job directory's file names and the statuses a job ends
with are written out in trainer/jobdir.py only; every other module of trainer/, sweeper/ and
reports/ names them through it (docstrings and comments aside)."""

from __future__ import annotations

import ast
from pathlib import Path

from trainer import jobdir

REPO = Path(__file__).resolve().parent.parent
FILES = {v for k, v in vars(jobdir).items() if k.endswith("_FILE") and isinstance(v, str)}
STATUSES = {v for k, v in vars(jobdir).items() if k.isupper() and isinstance(v, str) and k in (
    "COMPLETED", "COLLAPSED", "DIVERGED", "FAILED", "WAITING", "RUNNING", "PRUNED", "INTERRUPTED", "SURPLUS", "LOST")}
# Equal strings that are not the job directory's: a Hugging Face model directory's config.json, the
# tokenization cache's lock files.
ALLOWED = {("trainer/maxlen.py", "config.json"), ("trainer/data.py", ".lock")}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literals(root: Path = REPO) -> list[str]:
    out = []
    for package in ("trainer", "sweeper", "reports"):
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if name == "trainer/jobdir.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                        and node.value in FILES | STATUSES and (name, node.value) not in ALLOWED):
                    out.append(f"{name}:{node.lineno}: {node.value!r}")
    return out


def test_job_directory_names_and_statuses_are_spelt_in_jobdir_only() -> None:
    assert len(FILES) >= 10 and len(STATUSES) == 10
    assert literals() == []


def test_the_check_finds_a_literal(tmp_path: Path) -> None:
    (tmp_path / "sweeper").mkdir()
    (tmp_path / "sweeper" / "x.py").write_text('"""Reads result.json."""\n\nSTATE = "completed"\nNAME = "result.json"\n')
    assert literals(tmp_path) == ["sweeper/x.py:3: 'completed'", "sweeper/x.py:4: 'result.json'"]
