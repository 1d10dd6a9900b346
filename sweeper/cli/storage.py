"""`sweep storage serve`: Optuna's gRPC storage proxy in front of one database (sweeper/proxy.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from sweeper.cli.output import fail

DEFAULT_PORT = 13000

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="A storage for many workers: Optuna's gRPC proxy in front of one database.")


@app.command("serve")
def serve(
    storage: Annotated[str, typer.Option("--storage", envvar="SWEEP_DATABASE",
                                         help="The database to front: postgresql://USER@HOST:PORT/DB (or mysql://…, "
                                              "sqlite:///FILE).")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; workers on other "
                                           "machines need it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one); workers use --storage "
                                           "grpc://HOST:PORT.")] = DEFAULT_PORT,
    threads: Annotated[int, typer.Option(help="Calls served at once (each holds one database connection "
                                              "while it runs).")] = 16,
    address_file: Annotated[Path | None, typer.Option(
        help="Once listening, write where (JSON: host, port, pid) to this file, atomically; removed when it "
             "stops. A wildcard --host is written as this machine's name.")] = None,
) -> None:
    """Run Optuna's gRPC storage proxy in front of a database, in the foreground (SIGTERM or Ctrl-C
    stop it); workers then take --storage grpc://HOST:PORT."""
    from sweeper import proxy  # imported when it runs: optuna and grpc are not for `sweep --help`

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        proxy.start(storage, host=host, port=port, threads=threads, address_file=address_file)
    except proxy.StorageError as exc:
        raise fail(exc) from None
