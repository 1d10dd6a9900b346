"""The training core. `trainer.loop.run_job` runs one job; this package root stays light
(no torch import) so that the sweeper can validate configurations cheaply."""

from trainer.config import ConfigError, DataConfig, JobConfig, build_job
from trainer.jobfile import load_job

__all__ = ["ConfigError", "DataConfig", "JobConfig", "build_job", "load_job"]
