"""``rfad-serve``: run the Triton server of the nvidia-pytriton wheel over a model repository, in the foreground."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from rfad.contract import TRITON_PORTS
from rfad.serving.security import PROTOCOLS, Restriction, ServerTls

EPILOG = """\b
Exposing the server: it binds 127.0.0.1 (this machine only) unless told otherwise.
To serve other machines use --host 0.0.0.0 (or one interface's address) with TLS on the
gRPC port (--tls-cert/--tls-key; --tls-ca makes clients show a certificate that CA
signed) and, for a shared secret, --restrict-header/--restrict-value-file; or behind
your own network controls (a firewall or security group that admits just your ad
systems, or a reverse proxy that adds TLS and authentication). Under TLS the HTTP
endpoint (Triton's has no TLS) binds 127.0.0.1 only.

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
              help="Seconds in-flight requests may take to finish after Ctrl-C/SIGTERM: new rfad_pipeline requests "
                   "are refused (UNAVAILABLE) while they do; a second Ctrl-C stops at once.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate (chain) of the gRPC endpoint: with --tls-key, gRPC speaks TLS only.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Unencrypted PEM private key of --tls-cert (Triton reads the file; its content is never shown).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Mutual TLS: PEM CA certificate(s); clients must present a certificate one of them signed.")
@click.option("--restrict-header", metavar="KEY",
              help="Header name the restricted protocols require (gRPC clients send it as triton-grpc-protocol-KEY).")
@click.option("--restrict-value-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the header's value on one line (a secret: never printed or logged by rfad).")
@click.option("--restrict", "restricted", metavar="PROTOCOLS",
              help=f"Comma-separated protocols that need the header, of {', '.join(PROTOCOLS)} "
                   f"[default: all but health, which probes use].")
def main(repo, host, grpc_port, http_port, metrics_port, log_file, startup_timeout, exit_timeout, tls_cert, tls_key,
         tls_ca, restrict_header, restrict_value_file, restricted) -> None:
    """Start Triton over REPO, wait until every model is ready, print the endpoints, and serve
    in the foreground until Ctrl-C or SIGTERM; then drain (the requests in flight finish, new ones
    are refused so clients go elsewhere) and stop cleanly, exit code 0."""
    from rfad.serving.draining import DrainError
    from rfad.serving.launcher import TritonServer
    from rfad.serving.start_errors import ServerStartCancelled, ServerStartError

    tls, restriction = _security(tls_cert, tls_key, tls_ca, restrict_header, restrict_value_file, restricted)
    stop = threading.Event()
    # Installed before start-up, so a signal while models load also ends in a clean stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    server = TritonServer(repo, host=host, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          log_file=log_file, startup_timeout_s=startup_timeout, exit_timeout_s=exit_timeout,
                          tls=tls, restriction=restriction)
    try:
        server.start(cancel=stop)
    except ServerStartCancelled:
        click.echo("stopped before the server was ready")
        return
    except ServerStartError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        grpc_mode = f" ({tls.describe()})" if tls else ""
        http_mode = " (loopback only: Triton's HTTP has no TLS)" if server.http_host != host else ""
        click.echo(f"serving {repo} (ready in {server.startup_s:.1f} s): gRPC {host}:{server.grpc_port}{grpc_mode}  "
                   f"HTTP {server.http_host}:{server.http_port}{http_mode}  metrics {host}:{server.metrics_port}")
        if restriction is not None:
            click.echo(restriction.describe())
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
        # A second Ctrl-C or SIGTERM while draining stops at once (KeyboardInterrupt, then stop()).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            drained = server.drain(exit_timeout, refusing=lambda: click.echo(
                f"draining: new requests are refused; waiting up to {exit_timeout:g} s for those in flight"))
            click.echo(f"drained in {drained.seconds:.1f} s" if drained.drained else
                       f"{drained.busy} request(s) still in flight after {drained.seconds:.1f} s: stopping anyway")
        except DrainError as exc:
            click.echo(f"cannot drain: {exc}", err=True)
    except KeyboardInterrupt:
        click.echo("stopping at once")
    finally:
        code = server.stop()
    click.echo(f"stopped (Triton exit code {code})")


def _security(tls_cert, tls_key, tls_ca, restrict_header, restrict_value_file, restricted):
    """The TLS and restriction the flags ask for, each None when not asked; a usage error names the flag."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_ca is not None and tls_cert is None:
        raise click.UsageError("--tls-ca (mutual TLS) needs --tls-cert and --tls-key")
    if (restrict_header is None) != (restrict_value_file is None):
        raise click.UsageError("--restrict-header and --restrict-value-file go together")
    if restricted is not None and restrict_header is None:
        raise click.UsageError("--restrict needs --restrict-header and --restrict-value-file")
    try:
        tls = ServerTls.from_files(tls_cert, tls_key, tls_ca) if tls_cert is not None else None
        restriction = (Restriction.from_file(restricted, restrict_header, restrict_value_file)
                       if restrict_header is not None else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return tls, restriction


if __name__ == "__main__":
    main()
