"""Collapse judged on real predictions, on IMDB from ../shared.

A model that beats the majority class on validation rows subsampled 95:5 must not be called
collapsed (the old rule, val_acc <= majority + 0.02, did); a real job with a learning rate far
too high must be. The first model is a TF-IDF logistic regression (seconds, where fine-tuning
the encoder to beat a 95% majority takes a CPU far longer): the rule reads predictions and
labels only, whatever made them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED
from trainer.config import build_job
from trainer.loop import run_job
from trainer.metrics import accuracy, chance_line, collapse_reason, macro_f1, top_share

MODEL = SHARED / "models" / "all-MiniLM-L6-v2"
DATA = SHARED / "data" / "imdb"

pytestmark = pytest.mark.skipif(not (MODEL.is_dir() and DATA.is_dir()), reason=f"no real model and data at {SHARED}")


def _sample(frame, rows: int, positive_percent: int, seed: int):  # noqa: ANN001, ANN202 - pandas frames
    pos = rows * positive_percent // 100
    both = [frame[frame.label == 0].sample(n=rows - pos, random_state=seed),
            frame[frame.label == 1].sample(n=pos, random_state=seed + 1)]
    import pandas as pd

    return pd.concat(both).sample(frac=1.0, random_state=seed)


def test_a_model_that_beats_the_majority_on_95_to_5_data_is_not_collapsed(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    # the 95:5 validation rows, built here from ../shared into a tmp dir (never into the repo)
    _sample(pd.read_parquet(DATA / "test.parquet"), 1000, 5, seed=7).to_parquet(tmp_path / "val.parquet")
    val = pd.read_parquet(tmp_path / "val.parquet")
    train = _sample(pd.read_parquet(DATA / "train.parquet"), 2000, 50, seed=0)
    vectorizer = TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True)
    head = LogisticRegression(C=100.0, max_iter=3000).fit(vectorizer.fit_transform(train.text), train.label)
    # trained on balanced rows: its scores shifted by the validation prior's log-odds (5:95)
    logit = head.decision_function(vectorizer.transform(val.text)) + np.log(5 / 95)
    probs = np.stack([1 / (1 + np.exp(logit)), 1 / (1 + np.exp(-logit))], axis=1)
    labels = val.label.to_numpy()
    line = chance_line(labels, 2)
    acc, f1 = accuracy(probs, labels), macro_f1(probs, labels)
    assert line.majority == 0.95 and acc > line.majority, (acc, f1)  # the premise: it beats the majority class
    assert acc <= line.majority + 0.02  # ... by less than the old rule's 2 points, which called it collapsed
    assert collapse_reason(line, acc=acc, macro_f1=f1, top=top_share(probs)) is None, (acc, f1, line)
    # the constant predictor on the same rows is collapsed
    constant = np.zeros_like(probs)
    constant[:, 0] = 1.0
    assert collapse_reason(line, acc=accuracy(constant, labels), macro_f1=macro_f1(constant, labels),
                           top=top_share(constant)) is not None


@pytest.mark.slow
def test_a_real_job_with_a_learning_rate_far_too_high_is_collapsed(tmp_path: Path) -> None:
    cfg = build_job({"model": str(MODEL), "max_len": 64, "batch_size": 16, "lr": 0.01, "epochs": 1,
                     "data": {"name": str(DATA), "limit": 160, "eval_limit": 200}})
    result = run_job(cfg, tmp_path / "job")
    assert result["status"] == "collapsed", (result["epochs"], result["collapse"])
    assert result["collapse"]["collapsed"] and result["collapse"]["reason"]
