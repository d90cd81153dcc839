"""The connection options of every rfad-client command: ``--url`` (one endpoint or several, checked
up front) and the connection's security (TLS, client certificate, headers)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from rfad.client.endpoints import parse_endpoints
from rfad.client.security import HEADERS_ENV, ChannelSecurity, headers_from_environment, parse_headers
from rfad.client.transport import DEFAULT_URL

URL_HELP = ("Triton gRPC endpoint host:port, or several comma-separated (a:8001,b:8001): requests go to them "
            "in turn, and one that is unavailable is skipped until a health check passes again. "
            "dns:///name:port stands for every address of name (a headless Service), looked up again as "
            "the fleet scales; with TLS, give --tls-server-name (the addresses are pod IPs).")


def _endpoints(_ctx, _param, value: str) -> str:
    try:
        return ",".join(parse_endpoints(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--url: ")) from None


def url_option(command):
    """Add ``--url`` (default 127.0.0.1:8001), normalised to ``host:port[,host:port...]``."""
    return click.option("--url", default=DEFAULT_URL, show_default=True, callback=_endpoints, help=URL_HELP)(command)


_FILE = click.Path(dir_okay=False, path_type=Path)
_SECURITY_OPTIONS = (
    click.option("--tls", is_flag=True, help="Speak TLS to the server, trusting the system's CAs (or --ca)."),
    click.option("--ca", type=_FILE, help="PEM CA certificate(s) that signed the server's certificate (implies --tls)."),
    click.option("--cert", type=_FILE, help="Client certificate (PEM), for servers that require mutual TLS; with --key."),
    click.option("--key", type=_FILE, help="Unencrypted PEM private key of --cert."),
    click.option("--tls-server-name", metavar="NAME",
                 help="Name the server's certificate must carry when --url does not name it (a pod's IP address)."),
    click.option("--header", "header_items", multiple=True, metavar="KEY=VALUE",
                 help=f"Header sent with every call, e.g. authorization=Bearer... (repeatable; also read from "
                      f"{HEADERS_ENV}=k=v,k2=v2, which keeps tokens out of shell history; --header wins)."),
)


def security_options(command):
    """Add ``--tls``, ``--ca``, ``--cert``, ``--key``, ``--tls-server-name`` and ``--header``; the
    command receives them as ``security``, the keyword arguments of RfadClient/AsyncRfadClient,
    checked first (a bad file or header is a usage error naming it, never quoting a key or a value)."""

    @functools.wraps(command)
    def with_security(*args, tls, ca, cert, key, tls_server_name, header_items, **kwargs):
        try:
            headers = {**headers_from_environment(), **parse_headers(header_items)}
            security = {"tls": tls, "ca": ca, "cert": cert, "key": key, "headers": headers,
                        "tls_server_name": tls_server_name}
            ChannelSecurity.create(**security)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, security=security, **kwargs)

    for option in reversed(_SECURITY_OPTIONS):
        with_security = option(with_security)
    return with_security
