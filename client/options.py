"""The ``--url`` option of every rfad-client command: one endpoint or several, checked up front."""

from __future__ import annotations

import click

from rfad.client.endpoints import parse_endpoints
from rfad.client.transport import DEFAULT_URL

URL_HELP = ("Triton gRPC endpoint host:port, or several comma-separated (a:8001,b:8001): requests go to them "
            "in turn, and one that is unavailable is skipped until a health check passes again.")


def _endpoints(_ctx, _param, value: str) -> str:
    try:
        return ",".join(parse_endpoints(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--url: ")) from None


def url_option(command):
    """Add ``--url`` (default 127.0.0.1:8001), normalised to ``host:port[,host:port...]``."""
    return click.option("--url", default=DEFAULT_URL, show_default=True, callback=_endpoints, help=URL_HELP)(command)
