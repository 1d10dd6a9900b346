"""analysis.md: what `sweep analyze` found, as a page (pure: the findings in, the text out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.texts import excerpt


@dataclass(frozen=True)
class Example:
    """A test row's text, and its second text for a job trained on sentence pairs."""

    text: str
    pair: str | None = None

    def shown(self, limit: int = 220) -> str:
        if self.pair is None:
            return excerpt(self.text, limit)
        return f"{excerpt(self.text, limit // 2)} ‖ {excerpt(self.pair, limit // 2)}"

    def cells(self, limit: int = 220) -> str:
        """Its cells in a table row: the text, or for a pair both texts, each in its own column."""
        if self.pair is None:
            return excerpt(self.text, limit)
        return f"{excerpt(self.text, limit)} | {excerpt(self.pair, limit)}"


@dataclass(frozen=True)
class Findings:
    """What `sweep analyze` found: positions (`errors`, `boundary`, `compare["disagree"]`) index `rows`."""

    job_id: str
    described: list[str]  # A's job in a line, and B's with --against
    names: list[str]  # A's class names
    names_b: list[str] | None  # B's, with --against
    text_column: str
    pair_column: str | None  # the second text's column, for a pair job
    rows: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    text_of: dict[int, Example]
    errors: np.ndarray
    boundary: np.ndarray
    chosen: int  # the row whose attention is drawn
    why: str  # why that row
    tsne: dict[str, Any]
    compare: dict[str, Any] | None  # A against B
    top: int


def markdown(f: Findings) -> str:
    lines = _head(f) + _error_table(f) + _boundary_table(f)
    lines += ["", "## Attention", "", f"Row {f.chosen} ({f.why}): last layer, averaged over heads, eager attention.", "",
              *_quote(f, f.text_of[f.chosen]), "", "![attention](attention.png)", ""]
    if f.names_b is not None and f.compare is not None:
        lines += _against_section(f, f.names_b, f.compare)
    return "\n".join(lines)


def _text_heads(f: Findings) -> tuple[str, str]:
    """The text columns of a table: their heads and alignments (`Review`; for a pair job both
    columns, by the data's column names)."""
    if f.pair_column is None:
        return "Review", "---"
    return f"{excerpt(f.text_column, 60)} | {excerpt(f.pair_column, 60)}", "--- | ---"


def _quote(f: Findings, example: Example) -> list[str]:
    """The row drawn in the attention map, in full (up to 600 characters a text)."""
    if f.pair_column is None or example.pair is None:
        return [f"> {example.shown(600)}"]
    return [f"> **{excerpt(f.text_column, 60)}:** {excerpt(example.text, 600)}", ">",
            f"> **{excerpt(f.pair_column, 60)}:** {excerpt(example.pair, 600)}"]


def _head(f: Findings) -> list[str]:
    n_wrong = int((f.probs.argmax(1) != f.labels).sum())
    tsne = f.tsne
    return [f"# Analysis of job {f.job_id}", "", *(f"- {line}" for line in f.described)] + [
        "",
        f"Test rows analysed: {len(f.rows)}" + (" (those both jobs were tested on)" if f.names_b is not None else "")
        + f"; A gets {n_wrong} wrong (accuracy {1 - n_wrong / len(f.rows):.4f}), from its saved test predictions "
        "(best checkpoint). Row ids are positions in the merged train+test data.",
        "",
        "## t-SNE of the pooled test vectors",
        "",
        "![t-SNE](tsne.png)",
        "",
        f"The vectors the head sees, for the first {tsne['rows']} test rows, computed again from the best checkpoint; "
        f"crosses are the {tsne['misclassified']} misclassified reviews. The re-run agrees with the saved predictions on "
        f"{tsne['saved_vs_rerun_agreement']:.2%} of them (largest probability difference {tsne['max_prob_diff']:.1e}).",
        "",
        f"## Most confident errors ({len(f.errors)} of {n_wrong})",
        "",
    ]


def _error_table(f: Findings) -> list[str]:
    if not len(f.errors):
        return ["None: every analysed test review is classified correctly."]
    names, pred, (head, align) = f.names, f.probs.argmax(1), _text_heads(f)
    return [f"| Row | True | Predicted | p(predicted) | {head} |", f"| ---: | --- | --- | ---: | {align} |"] + [
        f"| {int(f.rows[i])} | {names[f.labels[i]]} | {names[pred[i]]} | {f.probs[i].max():.4f} "
        f"| {f.text_of[int(f.rows[i])].cells()} |" for i in f.errors]


def _boundary_table(f: Findings) -> list[str]:
    names, pred, (head, align) = f.names, f.probs.argmax(1), _text_heads(f)
    return ["", f"## Nearest the decision boundary ({len(f.boundary)})", "",
            f"| Row | True | Predicted | Probabilities | {head} |", f"| ---: | --- | --- | --- | {align} |"] + [
        f"| {int(f.rows[i])} | {names[f.labels[i]]} | {names[pred[i]]} | "
        + " / ".join(f"{names[k]} {p:.3f}" for k, p in enumerate(f.probs[i])) + f" | {f.text_of[int(f.rows[i])].cells()} |"
        for i in f.boundary]


def _against_section(f: Findings, names_b: list[str], compare: dict[str, Any]) -> list[str]:
    counts = compare["counts"]
    names, pred, probs, probs_b = f.names, f.probs.argmax(1), f.probs, compare["probs_b"]
    pred_b = probs_b.argmax(1)
    lines = [
        "## A against B",
        "",
        "| | B right | B wrong |",
        "| --- | ---: | ---: |",
        f"| **A right** | {counts['both_right']} | {counts['only_a']} |",
        f"| **A wrong** | {counts['only_b']} | {counts['both_wrong']} |",
        "",
        f"They disagree on {compare['disagreements']} of {len(f.rows)} reviews; exact McNemar test on the "
        f"{counts['only_a'] + counts['only_b']} discordant ones: p = {compare['mcnemar_p']:.4g}. One seed each: "
        "a sweep over seeds (`sweep report`) says more.",
        "",
        f"### Where they disagree ({min(f.top, compare['disagreements'])} of {compare['disagreements']}, "
        "largest difference in p(true label) first)",
        "",
    ]
    if compare["disagreements"]:
        head, align = _text_heads(f)
        lines += [f"| Row | True | A says | B says | {head} |", f"| ---: | --- | --- | --- | {align} |"]
        lines += [f"| {int(f.rows[i])} | {names[f.labels[i]]} | {names[pred[i]]} ({probs[i].max():.3f}) | "
                  f"{names_b[pred_b[i]]} ({probs_b[i].max():.3f}) | {f.text_of[int(f.rows[i])].cells()} |"
                  for i in compare["disagree"][: f.top]]
    else:
        lines.append("None.")
    return lines + ["", f"### Attention side by side (row {compare['attention_row']})", "",
                    "![attention, A vs B](attention_vs.png)", ""]
