"""The training core: one job configuration in; checkpoints, events and `result.json` out.

Reads top to bottom in `run` (`run_job`): set up (`setup`: device and precision from `devices`,
data, model, optimizer, schedule), loop over epochs (`epoch`: train one epoch, validate with
`evaluation`, keep the best, checkpoint), test the best checkpoint, judge collapse (`collapse`),
build and write the result (`result`). A job directory is its own state: started again, a
finished job returns its stored result and an interrupted one resumes from its last finished
epoch (`state.LoopState`, saved in `last.pt` after every epoch). An exception or an interrupt
(Ctrl-C, SIGTERM turned into one) at any point leaves the last finished epoch's files whole:
every file is written atomically.
"""

from __future__ import annotations

from trainer.jobdir import FINISHED
from trainer.loop.devices import DTYPES, Precision, resolve_precision, set_tf32
from trainer.loop.epoch import LOG_EVERY, EpochTraining
from trainer.loop.evaluation import TEST_KEYS, Scores, evaluate
from trainer.loop.result import start_warnings
from trainer.loop.run import run_job
from trainer.loop.setup import DIVERGED_FACTOR, Setup, eval_batch_size, make_optimizer, make_scheduler
from trainer.loop.state import ADDED_LATER, LoopState

__all__ = ["ADDED_LATER", "DIVERGED_FACTOR", "DTYPES", "FINISHED", "LOG_EVERY", "TEST_KEYS", "EpochTraining",
           "LoopState", "Precision", "Scores", "Setup", "eval_batch_size", "evaluate", "make_optimizer",
           "make_scheduler", "resolve_precision", "run_job", "set_tf32", "start_warnings"]
