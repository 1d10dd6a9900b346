"""Whether a job collapsed onto one class, and the status a job ends with."""

from __future__ import annotations

import logging
from typing import Any

from trainer.jobdir import COLLAPSED, COMPLETED, DIVERGED
from trainer.loop.setup import Setup
from trainer.loop.state import LoopState
from trainer.metrics import collapse_reason

log = logging.getLogger(__name__)

RULE = ("collapsed when after epoch 1 and after the last epoch the validation predictions are all one class while the "
        "labels are not, or their macro-F1 <= macro_f1_line (the constant predictor's plus min(margin, half the way "
        "to 1)), unless val_acc > majority_class_acc + margin; margin = 2 * sqrt(majority * (1 - majority) / "
        "val_rows); not judged when the labels are one class")


def row_reason(s: Setup, row: dict[str, Any]) -> str | None:
    """Why an epoch's validation predictions are collapsed (None: they are not)."""
    return collapse_reason(s.chance, acc=row["val_acc"], macro_f1=row["val_macro_f1"], top=row.get("val_top_share"))


def judge(s: Setup, state: LoopState) -> dict[str, Any]:
    """The collapse judgement and the figures it used (result.json's `collapse`): collapsed when
    the validation predictions after epoch 1 *and* after the last epoch are collapsed
    (`trainer.metrics.collapse_reason`), whatever the selection metric."""
    judged = {}
    for which, row in (("first", state.history[0]), ("last", state.history[-1])) if state.history else ():
        judged[which] = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_macro_f1": row["val_macro_f1"],
                         "val_top_share": row.get("val_top_share"), "reason": row_reason(s, row)}
    collapsed = bool(judged) and all(j["reason"] for j in judged.values())
    return {COLLAPSED: collapsed, "reason": judged["last"]["reason"] if collapsed else None,
            **s.chance.to_dict(), "epochs": judged, "rule": RULE}


def status(s: Setup, state: LoopState, *, diverged: bool) -> str:
    """The job's final status: diverged, collapsed or completed."""
    if diverged:
        return DIVERGED
    collapse = judge(s, state)
    if collapse[COLLAPSED]:
        log.error("validation predictions collapsed after epoch 1 and at the end: %s; status collapsed",
                  collapse["reason"])
        return COLLAPSED
    return COMPLETED
