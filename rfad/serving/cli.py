"""``rfad-serve``: run the Triton server of the nvidia-pytriton wheel over a repository."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click


@click.command()
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model repository (rfad-export triton-repo).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; use 0.0.0.0 only behind your own network controls.")
@click.option("--grpc-port", default=8001, show_default=True, type=int)
@click.option("--http-port", default=8000, show_default=True, type=int)
@click.option("--metrics-port", default=8002, show_default=True, type=int)
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path), help="Server log file.")
def main(repo, host, grpc_port, http_port, metrics_port, log_file) -> None:
    """Start Triton (model control mode none), wait until ready, serve until Ctrl-C / SIGTERM."""
    from rfad.serving.launcher import ServerStartError, TritonServer

    server = TritonServer(repo, host=host, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          log_file=log_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start: a signal during start-up still stops cleanly
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except ServerStartError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"serving {repo}: gRPC {host}:{server.grpc_port}  HTTP {host}:{server.http_port}  "
               f"metrics {host}:{server.metrics_port}")
    click.echo("models: " + ", ".join(sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file())))
    while not stop.wait(0.5):
        if server.process.poll() is not None:
            click.echo(f"Triton exited (code {server.process.returncode}):\n{server.log_tail()}", err=True)
            sys.exit(1)
    server.stop()
    click.echo("stopped")
