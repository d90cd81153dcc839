"""``rfad-serve``: run the Triton server of the nvidia-pytriton wheel over a model repository, in the foreground."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from rfad.contract import TRITON_PORTS

EPILOG = """\b
Exposing the server: it binds 127.0.0.1 (this machine only) unless told otherwise.
Triton has no authentication of its own; to serve other machines use --host 0.0.0.0
(or one interface's address) only behind your own network controls: a firewall or
security group that admits just your ad systems, or a reverse proxy that adds TLS and
authentication in front of the gRPC port.

\b
Example:
  rfad-export triton-repo ... --out repo
  rfad-serve --repo repo --log server.log
  rfad-client health
"""


@click.command(epilog=EPILOG)
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model repository (written by `rfad-export triton-repo`).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the gRPC, HTTP and metrics endpoints bind (see 'Exposing the server' below).")
@click.option("--grpc-port", default=TRITON_PORTS["grpc"], show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (0 picks a free one).")
@click.option("--http-port", default=TRITON_PORTS["http"], show_default=True, type=click.IntRange(0, 65535),
              help="HTTP/REST port (0 picks a free one).")
@click.option("--metrics-port", default=TRITON_PORTS["metrics"], show_default=True, type=click.IntRange(0, 65535),
              help="Prometheus metrics port (0 picks a free one).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the server log here (default: a temporary file removed at exit).")
@click.option("--startup-timeout", default=300.0, show_default=True, type=float,
              help="Seconds to wait for every model to load.")
@click.option("--exit-timeout", default=30.0, show_default=True, type=float,
              help="Seconds in-flight requests may take to finish after Ctrl-C/SIGTERM.")
def main(repo, host, grpc_port, http_port, metrics_port, log_file, startup_timeout, exit_timeout) -> None:
    """Start Triton over REPO, wait until every model is ready, print the endpoints, and serve
    in the foreground until Ctrl-C or SIGTERM (then stop cleanly, exit code 0)."""
    from rfad.serving.launcher import TritonServer
    from rfad.serving.start_errors import ServerStartCancelled, ServerStartError

    stop = threading.Event()
    # Installed before start-up, so a signal while models load also ends in a clean stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    server = TritonServer(repo, host=host, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          log_file=log_file, startup_timeout_s=startup_timeout, exit_timeout_s=exit_timeout)
    try:
        server.start(cancel=stop)
    except ServerStartCancelled:
        click.echo("stopped before the server was ready")
        return
    except ServerStartError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        click.echo(f"serving {repo} (ready in {server.startup_s:.1f} s): gRPC {host}:{server.grpc_port}  "
                   f"HTTP {host}:{server.http_port}  metrics {host}:{server.metrics_port}")
        models = server.models()
        click.echo("models: " + (", ".join(f"{m['name']} v{m['version']} {m['state']}" for m in models) or "none"))
        if log_file is not None:
            click.echo(f"server log: {log_file}")
        click.echo("Ctrl-C or SIGTERM stops the server")
        while not stop.wait(0.5):
            if server.has_exited():
                tail = server.log_tail()  # read before stop(), which removes a temporary log
                click.echo(f"Triton exited on its own (code {server.stop()}); the end of its log:\n{tail}", err=True)
                sys.exit(1)
    finally:
        code = server.stop()
    click.echo(f"stopped (Triton exit code {code})")


if __name__ == "__main__":
    main()
