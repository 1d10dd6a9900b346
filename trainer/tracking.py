"""Where a job reports: `events.jsonl` always, Weights & Biases when it is on.

`events.jsonl` is the job's own stream (one JSON object a line: `start`, `step`, `epoch`,
`warning`, `end`) that the sweeper tails to show progress and to prune trials.

W&B: `WANDB_MODE=disabled` turns it off; with no API key (or `WANDB_MODE=offline`) the run is
kept offline under the job directory, to sync later with `wandb sync`. Validation metrics are
plotted against `epoch` and training loss against `train/step` (`define_metric`), so the
charts' x-axes mean what they say. The run id defaults to the job id, so a resumed job
continues its own run; `WANDB_RUN_ID`, `WANDB_RUN_GROUP` and `WANDB_PROJECT` override.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from trainer.io import append_jsonl
from trainer.jobdir import EVENTS_FILE, EXIT_FAILED, EXIT_OK, FAILED

log = logging.getLogger(__name__)


def wandb_mode() -> str:
    """'disabled', 'offline' or 'online', from the environment and whether a key exists."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("disabled", "offline", "online"):
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class Tracker:
    def __init__(self, out_dir: Path, *, job_id: str, config: dict[str, Any]) -> None:
        self.events = out_dir / EVENTS_FILE
        self.run: Any = None
        mode = wandb_mode()
        if mode == "disabled":
            return
        try:
            import wandb
        except ImportError:  # pragma: no cover - wandb is a dependency, but keep training
            log.warning("wandb is not installed; logging to events.jsonl only")
            return
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "sweep"),
            id=os.environ.get("WANDB_RUN_ID", job_id),
            name=os.environ.get("WANDB_NAME", out_dir.name),
            dir=str(out_dir),
            config=config,
            mode=mode,  # type: ignore[arg-type]
            resume="allow",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("epoch")
        for prefix in ("val", "train_epoch"):
            self.run.define_metric(f"{prefix}/*", step_metric="epoch")
        self.run.define_metric("val/acc", step_metric="epoch", summary="max")
        self.run.define_metric("val/macro_f1", step_metric="epoch", summary="max")
        self.run.define_metric("val/loss", step_metric="epoch", summary="min")

    def event(self, name: str, /, **fields: Any) -> None:
        append_jsonl(self.events, {"event": name, "time": round(time.time(), 3), **fields})

    def step(self, *, step: int, epoch: float, loss: float, lr: float) -> None:
        self.event("step", step=step, epoch=round(epoch, 4), loss=loss, lr=lr)
        if self.run is not None:
            self.run.log({"train/step": step, "train/loss": loss, "train/lr": lr, "train/epoch": epoch})

    def epoch(self, row: dict[str, Any]) -> None:
        self.event("epoch", **row)
        if self.run is not None:
            self.run.log(
                {
                    "epoch": row["epoch"],
                    "val/acc": row["val_acc"],
                    "val/loss": row["val_loss"],
                    "val/macro_f1": row["val_macro_f1"],
                    "train_epoch/loss": row["train_loss"],
                    "train_epoch/acc": row["train_acc"],
                }
            )

    def finish(self, result: dict[str, Any]) -> None:
        keys = ("status", "best_epoch", "metric", "val_acc", "val_macro_f1", "val_loss", "test_acc", "test_macro_f1",
                "test_loss", "test_ece", "stopped_early")
        summary = {k: result.get(k) for k in keys}
        self.event("end", **summary)
        if self.run is not None:
            self.run.summary.update({f"test/{k[5:]}" if k.startswith("test_") else k: v for k, v in summary.items()})
            self.run.finish(exit_code=EXIT_OK if result["status"] != FAILED else EXIT_FAILED)
            self.run = None

    def abort(self) -> None:
        """Close the run as failed (an exception or an interrupt); never hides what stopped the job."""
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=EXIT_FAILED)
            except Exception:
                log.warning("the W&B run could not be closed", exc_info=True)
