"""Drawing the report's plots: a plot is data (`Plot`, `Series`), drawn by one function
(`draw`), in this process or in a helper process (`Painter`) while this one computes the rest
of the report.

`reports.plots` decides what to plot; this module knows matplotlib only, and imports nothing
else of the project but `trainer.io` (atomic writes), so the helper process starts in about
half a second: it imports matplotlib while the report reads the storage and runs its tests,
then draws each sweep's plots as they arrive. Where it cannot start (one CPU, no fork of a
new interpreter) or fails, the plots are drawn here, so the output is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.io import atomic_write

log = logging.getLogger(__name__)

# SWEEP_PLOT_PROCESS=0: always draw in this process (for debugging a plot).
ENV = "SWEEP_PLOT_PROCESS"
WAIT_S = 120.0  # a helper that has not finished this long after its last batch is killed, its plots drawn here


@dataclass(frozen=True)
class Series:
    """One thing drawn on the axes, in order: the line or points, then error bars, then a band."""

    x: Any
    y: Any
    label: str | None = None
    marker: str | None = None
    linestyle: str = "-"  # "none": points only
    alpha: float | None = None
    color: str | None = None
    yerr: Any = None  # symmetric (n,) or (lower, upper): drawn as error bars with caps
    band: tuple[Any, Any] | None = None  # (low, high): a shaded band
    band_label: str | None = None
    band_alpha: float = 0.2


@dataclass(frozen=True)
class Plot:
    path: Path
    caption: str  # the report's title for it
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    figsize: tuple[float, float] = (7.0, 4.0)
    log_x: bool = False
    integer_x: bool = False  # integer tick positions only
    xticks: list[Any] | None = None
    xticklabels: list[str] | None = None
    xlim: tuple[float, float] | None = None
    legend: bool = True


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "sweep"  # no random ids in output
    return plt


def save(fig: Any, path: Path) -> None:
    """A figure as a PNG, written atomically (a reader never sees half a file)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                                               metadata={"Software": None}))


def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure on the Agg canvas directly: pyplot's figure manager is not needed to save one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _log_x(ax: Any) -> None:
    """A log x axis labelled in plain numbers (matplotlib's default 10^k labels go through its
    mathtext parser, a large part of a plot's cost)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw(plot: Plot) -> Any:
    """Draw one plot on new axes and return them (not yet saved)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(plot.figsize)
    for s in plot.series:
        style: dict[str, Any] = {"marker": s.marker, "linestyle": s.linestyle, "label": s.label}
        if s.alpha is not None:
            style["alpha"] = s.alpha
        if s.color is not None:
            style["color"] = s.color
        if s.yerr is not None:
            ax.errorbar(s.x, s.y, yerr=s.yerr, capsize=4, **style)
        else:
            ax.plot(s.x, s.y, **style)
        if s.band is not None:
            ax.fill_between(s.x, s.band[0], s.band[1], alpha=s.band_alpha, label=s.band_label)
    if plot.log_x:
        _log_x(ax)
    if plot.xticks is not None:
        ax.set_xticks(plot.xticks, plot.xticklabels)
    elif plot.integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if plot.xlim is not None:
        ax.set_xlim(*plot.xlim)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(plot.title, fontsize=9 if len(plot.title) > 60 else None)
    if plot.legend:
        ax.legend(fontsize=7)
    return ax


def draw_all(plots: Iterable[Plot]) -> None:
    for plot in plots:
        save(draw(plot).figure, plot.path)


# -- the helper process -------------------------------------------------------------------------

_ROOT = str(Path(__file__).resolve().parents[1])
_CHILD = f"import sys; sys.path.insert(0, {_ROOT!r}); from reports.draw import serve; serve()"


def _warm() -> None:
    """Import matplotlib and draw a small figure with text and a legend (loading the font and
    its caches) into memory: what a first plot would pay, paid while the parent still reads."""
    import io

    fig, ax = _figure((2.0, 2.0))
    ax.plot([1, 2], [1, 2], marker="o", label="warm")
    ax.fill_between([1, 2], [0, 1], [2, 3], alpha=0.2)
    ax.set_title("warm")
    ax.legend(fontsize=7)
    fig.savefig(io.BytesIO(), format="png", dpi=100, bbox_inches="tight")


def serve() -> None:
    """The helper's loop: import matplotlib at once, then draw each pickled (key, plots) batch
    from stdin, answering one JSON line per batch on stdout."""
    _warm()  # while the parent is still reading the storage
    out = sys.stdout
    while True:
        try:
            key, plots = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        try:
            draw_all(plots)
            answer: dict[str, Any] = {"key": key}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which draws the batch itself
            answer = {"key": key, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Painter:
    """Draws batches of plots in a helper process while the caller goes on; `finish()` waits and
    draws here whatever the helper could not. Use as a context manager (the helper is stopped
    on the way out, whatever happened)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._local: dict[str, list[Plot]] = {}
        self._sent: dict[str, list[Plot]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        if not enabled or os.environ.get(ENV, "1") == "0" or _cores() < 2:
            return
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the helper's stderr, closed in _stop
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        except OSError as exc:
            self._stderr.close()
            log.debug("plots drawn in this process: no helper (%s)", exc)
            return
        # a writer thread: a batch larger than the pipe's buffer must not block the caller
        self._writer = threading.Thread(target=self._write, name="sweep-plots", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin = self._proc.stdin
        try:
            while (data := self._queue.get()) is not None:
                stdin.write(data)
                stdin.flush()
        except OSError:  # the helper died: finish() draws its batches here
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def submit(self, key: str, plots: list[Plot]) -> None:
        if not plots:
            return
        if self._proc is None:
            self._local[key] = plots
            return
        self._sent[key] = plots
        self._queue.put(pickle.dumps((key, plots), protocol=pickle.HIGHEST_PROTOCOL))

    def finish(self) -> dict[str, OSError]:
        """Wait for the helper and draw here every batch it did not draw; returns the batches whose
        files could not be written (a read-only directory, a full disk), with why."""
        todo = dict(self._local)
        self._local = {}
        if self._proc is not None:
            done = self._stop(wait=True)
            todo.update({k: v for k, v in self._sent.items() if k not in done})
            self._sent = {}
        failed = {}
        for key, plots in todo.items():
            try:
                draw_all(plots)
            except OSError as exc:
                failed[key] = exc
        return failed

    def _stop(self, *, wait: bool) -> set[str]:
        proc, self._proc = self._proc, None
        if proc is None:
            return set()
        self._queue.put(None)
        done: set[str] = set()
        try:
            if wait:
                assert self._writer is not None
                self._writer.join(WAIT_S)
                proc.stdin = None  # closed by the writer: communicate() must not flush it
                out, _ = proc.communicate(timeout=WAIT_S)
                for line in out.decode(errors="replace").splitlines():
                    answer = json.loads(line)
                    if "error" in answer:
                        log.warning("plots of %s: the helper process failed (%s); drawing them here",
                                    answer["key"], answer["error"])
                    else:
                        done.add(answer["key"])
                if proc.returncode:
                    self._stderr.seek(0)
                    tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                    log.warning("the plot helper process exited with %s (%s); drawing its plots here",
                                proc.returncode, tail[0] if tail else "no message")
        except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
            log.warning("the plot helper process did not finish (%s); drawing its plots here", exc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._stderr.close()
        return done

    def __enter__(self) -> Painter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop(wait=False)
