"""What both clients send besides the request: TLS channel credentials and call headers, written once.

:class:`ChannelSecurity` holds them (the PEM files read once, at construction, and checked there:
a wrong path or a file that is not PEM is an error naming the flag, never quoting a key or a
header value); :meth:`ChannelSecurity.connect` opens one tritonclient connection (blocking or
asyncio) to one endpoint with them, so every endpoint of a failover pool carries the same
credentials and headers, health checks included.

Headers travel as gRPC metadata on every call: an ``authorization`` header for a gateway in front
of Triton, or ``triton-grpc-protocol-<key>`` for a protocol ``rfad-serve --restrict-header <key>``
restricts. ``rfad-client`` also reads them from the environment variable :data:`HEADERS_ENV`
(comma-separated ``KEY=VALUE`` pairs), so a token need not appear in a shell's history.
"""

from __future__ import annotations

import inspect
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HEADERS_ENV = "RFAD_CLIENT_HEADERS"
# gRPC metadata keys: lowercase; "grpc-" is gRPC's own and "-bin" marks binary values.
_HEADER_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _pem(flag: str, path: str | os.PathLike, marker: bytes) -> bytes:
    """The bytes of the PEM file ``path`` (for ``flag``), refused unless it holds a ``marker`` block."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise ValueError(f"{flag} {path}: no PEM {marker.decode().strip('- ').lower()} in it")
    return data


def check_headers(headers: Mapping[str, str], flag: str = "--header") -> dict[str, str]:
    """``headers`` with lowercase keys, each checked as gRPC metadata; a bad one is a ValueError
    naming the key (never the value, which is often a token)."""
    checked = {}
    for key, value in headers.items():
        key = str(key).strip().lower()
        if not _HEADER_KEY.fullmatch(key) or key.startswith("grpc-") or key.endswith("-bin"):
            raise ValueError(f"{flag} {key!r}: not a header name (letters, digits, '-', '_', '.'; "
                             "not grpc-* or *-bin)")
        if not isinstance(value, str) or not value or not all(0x20 <= ord(c) <= 0x7e for c in value):
            raise ValueError(f"{flag} {key}: the value must be non-empty printable ASCII (the value is not shown)")
        checked[key] = value
    return checked


def parse_headers(items, flag: str = "--header") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a checked dict (a later key wins)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag}: expected KEY=VALUE, got a value without '=' or key (not shown)")
        pairs[key.strip()] = value
    return check_headers(pairs, flag)


def headers_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The headers of :data:`HEADERS_ENV` (``key=value,key2=value2``; unset or empty: none)."""
    text = environ.get(HEADERS_ENV, "").strip()
    return parse_headers([item for item in text.split(",") if item.strip()], HEADERS_ENV) if text else {}


class _HeaderedClient:
    """A tritonclient client (blocking or asyncio) whose calls that take ``headers`` also send
    ``headers`` (a call's own headers win on the same key); everything else passes through."""

    def __init__(self, client, headers: dict[str, str]):
        self._client, self._headers, self._takes_headers = client, headers, {}

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if name not in self._takes_headers:
            self._takes_headers[name] = callable(attribute) and "headers" in inspect.signature(attribute).parameters
        if not self._takes_headers[name]:
            return attribute

        def call(*args, headers=None, **kwargs):
            return attribute(*args, headers={**self._headers, **(headers or {})}, **kwargs)

        return call


@dataclass(frozen=True)
class ChannelSecurity:
    """TLS and headers of a client's connections. Build it with :meth:`create`."""

    tls: bool = False
    server_name: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    _root: bytes | None = field(default=None, repr=False)
    _key: bytes | None = field(default=None, repr=False)
    _chain: bytes | None = field(default=None, repr=False)

    @classmethod
    def create(cls, tls: bool = False, ca: str | os.PathLike | None = None, cert: str | os.PathLike | None = None,
               key: str | os.PathLike | None = None, headers: Mapping[str, str] | None = None,
               tls_server_name: str | None = None) -> "ChannelSecurity":
        """``tls``: speak TLS, trusting the system's CAs unless ``ca`` (PEM) names others; giving
        ``ca``, ``cert`` or ``tls_server_name`` implies TLS. ``cert``/``key``: the client's PEM
        certificate and unencrypted key, for servers that require mutual TLS. ``tls_server_name``:
        the name the server's certificate must carry when the address is not it (a pod's IP).
        ``headers``: sent with every call. Raises ValueError naming the flag."""
        if (cert is None) != (key is None):
            raise ValueError("--cert and --key go together (mutual TLS)")
        root = _pem("--ca", ca, b"CERTIFICATE-----") if ca is not None else None
        chain = _pem("--cert", cert, b"CERTIFICATE-----") if cert is not None else None
        private = _pem("--key", key, b"PRIVATE KEY-----") if key is not None else None
        if cert is not None:
            try:  # the pair must match, or the handshake fails with a message that does not say why
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=_no_password)
            except ValueError:
                raise ValueError(f"--key {key}: encrypted; give an unencrypted PEM key") from None
            except ssl.SSLError as exc:
                if exc.reason == "KEY_VALUES_MISMATCH":
                    raise ValueError(f"--key {key}: not the private key of --cert {cert}") from None
                raise ValueError(f"--key {key}: not a PEM private key for --cert {cert}") from None
        if tls_server_name is not None and not re.fullmatch(r"[A-Za-z0-9*][A-Za-z0-9.*-]*", tls_server_name):
            raise ValueError(f"--tls-server-name: {tls_server_name!r} is not a host name")
        tls = bool(tls or root or chain or tls_server_name)
        return cls(tls, tls_server_name, check_headers(headers or {}), root, private, chain)

    def channel_args(self) -> list[tuple[str, str]]:
        """gRPC channel options this security adds (the server name to verify, when set)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def connect(self, grpc_module, url: str, channel_args: list):
        """A ``grpc_module.InferenceServerClient`` (tritonclient.grpc or .aio) for ``url`` with this
        security's TLS credentials and headers."""
        options = [*channel_args, *self.channel_args()]
        if self.tls:
            import grpc

            credentials = grpc.ssl_channel_credentials(root_certificates=self._root, private_key=self._key,
                                                       certificate_chain=self._chain)
            client = grpc_module.InferenceServerClient(url, creds=credentials, channel_args=options)
        else:
            client = grpc_module.InferenceServerClient(url, channel_args=options)
        return _HeaderedClient(client, self.headers) if self.headers else client


def _no_password() -> bytes:
    # Asked for only when the key is encrypted.
    raise ValueError("encrypted")
