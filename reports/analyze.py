"""What a finished job gets wrong, and where two jobs part ways: `sweep analyze`.

From the job's saved test predictions (`test_predictions.npz`, the best checkpoint's) and the
test texts: the most confident errors and the examples nearest the decision boundary; from
the model itself: a t-SNE map of the pooled test vectors (the head's input) and a last-layer
attention heat map (eager attention, for that pass only). With a second job: the paired
counts on the shared test rows, the exact McNemar test, the disagreements, and both jobs'
attention on one of them. Everything is written to a temporary directory renamed into place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reports.analysis_page import Example, Findings, markdown
from reports.collect import Predictions, load_predictions
from reports.draw import pyplot as _pyplot
from reports.draw import save as _save
from reports.stats import mcnemar_p
from sweeper.jobs import FinishedJob, JobRefError
from trainer.jobdir import PREDICTIONS_FILE

MARKER = "analysis.json"
SAME_DATA_KEYS = ("name", "split", "text", "text_pair", "label")


class AnalyzeError(ValueError):
    """Inputs that cannot be analysed (the message says which and why)."""


@dataclass(frozen=True)
class Side:
    """One job's saved test predictions, ready to pair with another's."""

    job: FinishedJob
    preds: Predictions
    names: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.preds.probs.argmax(axis=1)


def load_side(job: FinishedJob) -> Side:
    from trainer.model import label_names

    preds = load_predictions(job.dir)
    if preds is None:
        if (job.dir / PREDICTIONS_FILE).exists():
            raise JobRefError(f"JOB: {job.dir / PREDICTIONS_FILE} is damaged (the warning above says how)")
        raise JobRefError(f"JOB: {job.dir} has no saved test predictions ({PREDICTIONS_FILE})")
    return Side(job=job, preds=preds, names=label_names(job.model_dir))


def check_inputs(a: Side, b: Side | None, example: int | None) -> np.ndarray:
    """Checks done before any work; returns the rows the analysis may use (A's test rows, or
    the rows both jobs were tested on)."""
    rows = a.preds.rows
    if b is not None:
        data_a, data_b = a.job.config.to_dict()["data"], b.job.config.to_dict()["data"]
        for key in SAME_DATA_KEYS:
            if data_a[key] != data_b[key]:
                raise AnalyzeError(f"--against: the jobs were tested on different data (data.{key}: "
                                   f"{data_a[key]!r} in {a.job.dir} vs {data_b[key]!r} in {b.job.dir}); "
                                   "expected the same data set and split")
        rows = np.intersect1d(a.preds.rows, b.preds.rows)
        if len(rows) == 0:
            raise AnalyzeError(f"--against: {a.job.dir} and {b.job.dir} share no test rows")
    if example is not None and example not in set(rows.tolist()):
        where = "test rows both jobs share" if b is not None else f"test rows of {a.job.dir}"
        raise AnalyzeError(f"--example: row {example} is not among the {len(rows)} {where}; "
                           f"expected one of the row ids analysis.md lists (e.g. {int(rows[0])})")
    return rows


def _aligned(side: Side, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of `side` at `rows` (which it holds)."""
    position = {int(r): i for i, r in enumerate(side.preds.rows)}
    idx = np.array([position[int(r)] for r in rows], dtype=np.int64)
    return side.preds.labels[idx], side.preds.probs[idx]


def confident_errors(labels: np.ndarray, probs: np.ndarray, top: int) -> np.ndarray:
    """Positions of the wrong predictions, most confident first (ties: earlier row first)."""
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    order = np.argsort(-probs[wrong].max(axis=1), kind="stable")
    return wrong[order][:top]


def nearest_boundary(probs: np.ndarray, top: int) -> np.ndarray:
    """Positions with the smallest margin between the two most likely classes."""
    ranked = np.sort(probs, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    return np.argsort(margin, kind="stable")[:top]


def paired_counts(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, int]:
    right_a, right_b = probs_a.argmax(axis=1) == labels, probs_b.argmax(axis=1) == labels
    return {"both_right": int((right_a & right_b).sum()), "only_a": int((right_a & ~right_b).sum()),
            "only_b": int((~right_a & right_b).sum()), "both_wrong": int((~right_a & ~right_b).sum())}


def analyze(
    a: Side, out: Path, *, against: Side | None = None, example: int | None = None, limit: int = 2000,
    top: int = 10, attention_tokens: int = 48, force: bool = False,
) -> dict[str, Any]:
    """Write `out/analysis.md`, its PNGs and `analysis.json`; returns the summary."""
    from trainer.io import atomic_dir, check_output_dir, write_json

    rows = check_inputs(a, against, example)
    check_output_dir(out, marker=MARKER, force=force)
    text_of = _texts(a, rows)
    labels, probs = _aligned(a, rows)
    summary: dict[str, Any] = {"job": str(a.job.dir), "test_rows": len(rows), "labels": a.names,
                               "accuracy": float((probs.argmax(1) == labels).mean())}

    with atomic_dir(out) as tmp:
        # t-SNE of the pooled vectors, from the best checkpoint run again on the first rows.
        subset = rows[:limit]
        tsne = _tsne(a, [text_of[int(r)] for r in subset], labels[: len(subset)], probs[: len(subset)], tmp / "tsne.png")
        summary["tsne"] = {"rows": len(subset), **tsne}

        errors = confident_errors(labels, probs, top)
        boundary = nearest_boundary(probs, top)
        summary["errors"] = {"count": int((probs.argmax(1) != labels).sum()), "listed": rows[errors].tolist()}
        summary["boundary"] = rows[boundary].tolist()
        chosen, why = _chosen_row(rows, errors, boundary, example)
        compare = _against(against, rows, labels, probs, example=example, chosen=chosen, top=top) if against else None

        _attention_figures(a, against, text_of, chosen, compare, tmp, tokens=attention_tokens)
        summary["attention_row"] = chosen

        described = [f"A: {_describe(a)}"] + ([f"B: {_describe(against)}"] if against else [])
        found = Findings(job_id=a.job.id, described=described, names=a.names,
                         names_b=against.names if against else None, text_column=a.job.config.data.text,
                         pair_column=a.job.config.data.text_pair, rows=rows, labels=labels, probs=probs,
                         text_of=text_of, errors=errors, boundary=boundary, chosen=chosen, why=why,
                         tsne=summary["tsne"], compare=compare, top=top)
        (tmp / "analysis.md").write_text(markdown(found))
        if compare is not None:
            summary["against"] = {k: v for k, v in compare.items() if k not in ("probs_b", "disagree")}
        write_json(tmp / MARKER, summary)
    return summary


def _texts(side: Side, rows: np.ndarray) -> dict[int, Example]:
    """The test texts (and second texts, for a pair job) of `rows`, read from the job's data."""
    from trainer.data import load_rows

    cfg = side.job.config
    merged, _ = load_rows(cfg.data)
    chosen_rows = merged.select(rows)
    pairs = chosen_rows[cfg.data.text_pair] if cfg.data.text_pair else [None] * len(rows)
    return {row: Example(text, pair) for row, text, pair in zip(rows.tolist(), chosen_rows[cfg.data.text], pairs,
                                                                 strict=True)}


def _chosen_row(rows: np.ndarray, errors: np.ndarray, boundary: np.ndarray, example: int | None) -> tuple[int, str]:
    """The row whose attention is drawn, and why that one."""
    if example is not None:
        return example, "chosen with --example"
    if len(errors):
        return int(rows[errors[0]]), "the most confidently wrong test review"
    return int(rows[boundary[0]]), "no test review is wrong; the one nearest the decision boundary"


def _against(b: Side, rows: np.ndarray, labels: np.ndarray, probs: np.ndarray, *, example: int | None, chosen: int,
             top: int) -> dict[str, Any]:
    """A against B on the shared rows: the paired counts, McNemar's p, the disagreements (largest
    difference in p(true label) first) and the row both attention maps are drawn for."""
    _, probs_b = _aligned(b, rows)
    counts = paired_counts(labels, probs, probs_b)
    disagree = np.flatnonzero(probs.argmax(1) != probs_b.argmax(1))
    gap = np.abs(probs[disagree, labels[disagree]] - probs_b[disagree, labels[disagree]])
    disagree = disagree[np.argsort(-gap, kind="stable")]
    right_a, right_b = probs.argmax(1) == labels, probs_b.argmax(1) == labels
    side_row = example if example is not None else (int(rows[disagree[0]]) if len(disagree) else chosen)
    return {"job": str(b.job.dir), "counts": counts, "disagreements": len(disagree),
            "mcnemar_p": mcnemar_p(right_a, right_b), "listed": rows[disagree[:top]].tolist(),
            "attention_row": side_row, "probs_b": probs_b, "disagree": disagree}


def _tsne(side: Side, texts: list[Example], labels: np.ndarray, saved: np.ndarray, path: Path) -> dict[str, Any]:
    from sklearn.manifold import TSNE

    from trainer import inference

    model, tokenizer = inference.load(side.job.dir)
    pairs = [t.pair or "" for t in texts] if side.job.config.data.text_pair else None
    outputs = inference.predict(model, tokenizer, [t.text for t in texts], max_len=side.job.config.max_len,
                                embeddings=True, pairs=pairs, dtype=inference.evaluation_dtype(side.job.dir))
    assert outputs.embeddings is not None
    agree = float((outputs.probs.argmax(1) == saved.argmax(1)).mean())
    n = len(texts)
    points = (TSNE(n_components=2, perplexity=float(min(30.0, max(2.0, (n - 1) / 3))), init="pca", random_state=0)
              .fit_transform(outputs.embeddings) if n >= 4 else np.zeros((n, 2)))
    wrong = saved.argmax(1) != labels
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    colours = plt.get_cmap("tab10")
    for k, name in enumerate(side.names):
        keep = (labels == k) & ~wrong
        ax.scatter(points[keep, 0], points[keep, 1], s=7, alpha=0.55, color=colours(k), label=f"{name}: correct")
        miss = (labels == k) & wrong
        ax.scatter(points[miss, 0], points[miss, 1], s=34, marker="x", linewidths=1.2, color=colours(k),
                   label=f"{name}: misclassified")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of pooled test vectors ({n} reviews), colour = true label", fontsize=9)
    ax.legend(fontsize=7, markerscale=1.2)
    _save(fig, path)
    plt.close(fig)
    return {"misclassified": int(wrong.sum()), "saved_vs_rerun_agreement": agree,
            "max_prob_diff": float(np.abs(outputs.probs - saved).max()) if n else 0.0}


def _attention_figures(a: Side, b: Side | None, text_of: dict[int, Example], chosen: int,
                       compare: dict[str, Any] | None, out: Path, *, tokens: int) -> None:
    """attention.png (A on the chosen row) and, with B, attention_vs.png (both on one row)."""
    eager = functools.cache(_eager_model)  # A's model serves both attention figures
    _attention_plot([(a, text_of[chosen], chosen)], out / "attention.png", eager, tokens=tokens,
                    title=f"row {chosen}: last-layer attention, mean over heads")
    if compare is not None and b is not None:
        row_vs = compare["attention_row"]
        _attention_plot([(a, text_of[row_vs], row_vs), (b, text_of[row_vs], row_vs)], out / "attention_vs.png", eager,
                        tokens=tokens, title=f"row {row_vs}: A (left) vs B (right)")


def _eager_model(job_dir: Path) -> tuple[Any, Any]:
    from trainer import inference

    return inference.load(job_dir, attention="eager")


def _prediction(side: Side, row: int) -> str:
    """What the side's saved predictions say of a test row: the label and its probability."""
    i = int(np.flatnonzero(side.preds.rows == row)[0])
    k = int(side.preds.probs[i].argmax())
    truth = side.names[int(side.preds.labels[i])]
    return f"predicts {side.names[k]} ({side.preds.probs[i, k]:.2f}; true {truth})"


def _attention_plot(panels: list[tuple[Side, Example, int]], path: Path, load: Any, *, tokens: int, title: str) -> None:
    """The panels side by side on one colour scale (0 to the largest weight of any panel), each
    titled with its model and what it predicts for the row."""
    from trainer import inference

    plt = _pyplot()
    maps = []
    for side, example, _ in panels:
        model, tokenizer = load(side.job.dir)
        names, weights = inference.last_layer_attention(model, tokenizer, example.text, max_len=side.job.config.max_len,
                                                        pair=example.pair)
        maps.append((names, weights, min(tokens, len(names))))
    top = max(float(w[:n, :n].max()) for _, w, n in maps)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.0), squeeze=False, layout="constrained")
    image = None
    for ax, (side, _, row), (names, weights, shown) in zip(axes[0], panels, maps, strict=True):
        image = ax.imshow(weights[:shown, :shown], cmap="viridis", aspect="auto", vmin=0.0, vmax=top)
        ax.set_xticks(range(shown), names[:shown], rotation=90, fontsize=6)
        ax.set_yticks(range(shown), names[:shown], fontsize=6)
        more = f", first {shown} of {len(names)} tokens" if shown < len(names) else ""
        ax.set_title(f"{side.job.id} ({Path(side.job.config.model_path).name}, {side.job.config.pooling}{more})\n"
                     f"{_prediction(side, row)}", fontsize=8)
        ax.set_xlabel("attended token", fontsize=7)
        ax.set_ylabel("attending token", fontsize=7)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046 / len(panels), pad=0.01, label="attention weight (one scale)")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def _describe(side: Side) -> str:
    c = side.job.config
    r = side.job.result
    return (f"`{side.job.dir}`: {Path(c.model_path).name}, {c.pooling} pooling, batch {c.batch_size}, lr {c.lr:g}, "
            f"dropout {c.dropout:g}, max_len {c.max_len}, seed {c.seed}; status {r.get('status')}, "
            f"val acc {r.get('val_acc', float('nan')):.4f}, test acc {r.get('test_acc', float('nan')):.4f}")
