"""What ``rfad-serve`` asks Triton to enforce: TLS (or mutual TLS) on the gRPC endpoint, and
protocols that answer only requests carrying a header.

Triton 2.51's own flags (spelled as the nvidia-pytriton wheel's ``tritonserver --help`` spells them):
``--grpc-use-ssl``, ``--grpc-use-ssl-mutual``, ``--grpc-server-cert``, ``--grpc-server-key``,
``--grpc-root-cert``, ``--grpc-restricted-protocol=<protocols>:<key>=<value>`` and
``--http-restricted-api=<apis>:<key>=<value>``. What that server does with them, seen on it
(``tests/test_serving_tls.py`` holds each fact):

- TLS covers the gRPC endpoint only: Triton's HTTP endpoint has no TLS. Under TLS the launcher
  binds HTTP to loopback, so plain-text inference is not reachable from other machines.
- A restricted gRPC protocol wants the header ``triton-grpc-protocol-<key>``; HTTP wants ``<key>``.
  Without it gRPC answers UNAVAILABLE ("This protocol is restricted, expecting header ..."),
  HTTP 403; the server keeps serving.
- A private key that does not match its certificate (or is not a key) makes Triton load every
  model, then exit with a misleading "Socket ... already in use". So the files are checked here
  first, with the standard library's ``ssl`` (whose errors never quote the key).

The private key and the header's value are read from files. The key is only ever a path here
(Triton reads it); the value must reach Triton on its command line (Triton 2.51 has no other
way), so it is never printed, logged or put in an error message by rfad.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

# The protocol (gRPC) and API (HTTP) groups Triton 2.51 can restrict, in its --help order.
PROTOCOLS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics",
             "trace", "logging")
# Health stays open: Kubernetes probes and load balancers cannot send a secret header.
DEFAULT_RESTRICTED = tuple(p for p in PROTOCOLS if p != "health")
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
# gRPC metadata keys are lowercase; Triton looks the key up as given.
_HEADER_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _no_password() -> bytes:
    # Asked for only when the key is encrypted; Triton cannot read an encrypted key either.
    raise ValueError("encrypted")


def _readable(flag: str, path: str | Path) -> Path:
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    return path.resolve()


def _load_certificates(flag: str, path: str | Path) -> Path:
    """``path``, resolved, once it is known to hold PEM certificates."""
    path = _readable(flag, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        raise ValueError(f"{flag} {path}: no PEM certificate in it") from None
    return path


@dataclass(frozen=True)
class ServerTls:
    """TLS on Triton's gRPC endpoint. ``cert``: PEM certificate (chain) the server presents;
    ``key``: its PEM private key (unencrypted); ``ca``: for mutual TLS, PEM CA certificate(s) that
    signed the certificates clients must present (None: any client may connect over TLS)."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, ca: str | Path | None = None) -> "ServerTls":
        """Check the files (readable, PEM, the key belongs to the certificate, the CA loads) before
        Triton sees them; raises ValueError naming the flag and file, never quoting the key."""
        cert, key = _load_certificates("--tls-cert", cert), _readable("--tls-key", key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
        except ValueError:
            raise ValueError(f"--tls-key {key}: encrypted; Triton reads only unencrypted PEM keys") from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ValueError(f"--tls-key {key}: not the private key of --tls-cert {cert}") from None
            raise ValueError(f"--tls-key {key}: no PEM private key in it") from None
        if ca is not None:
            ca = _load_certificates("--tls-ca", ca)
        return cls(cert, key, ca)

    @property
    def mutual(self) -> bool:
        return self.ca is not None

    def triton_args(self) -> list[str]:
        args = ["--grpc-use-ssl", "true", "--grpc-server-cert", str(self.cert), "--grpc-server-key", str(self.key)]
        if self.ca is not None:
            args += ["--grpc-use-ssl-mutual", "true", "--grpc-root-cert", str(self.ca)]
        return args

    def describe(self) -> str:
        return "mutual TLS" if self.mutual else "TLS"


@dataclass(frozen=True)
class Restriction:
    """Protocols (gRPC) and APIs (HTTP) of Triton that serve only requests whose header ``key``
    carries ``value`` (the same groups on both endpoints)."""

    protocols: tuple[str, ...]
    key: str
    value: str = field(repr=False)

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"--restrict: {', '.join(unknown) or 'nothing'} is not a protocol Triton can restrict "
                             f"(one or more of {', '.join(PROTOCOLS)})")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"--restrict: {','.join(self.protocols)} names a protocol twice")
        if not _HEADER_KEY.fullmatch(self.key) or self.key.startswith(("grpc-", GRPC_HEADER_PREFIX)):
            raise ValueError(f"--restrict-header: {self.key!r} is not a lowercase header name of letters, digits, "
                             "'-', '_' or '.' (not starting with grpc-)")
        # Printable ASCII without spaces: a gRPC metadata value, and one word on Triton's command line.
        if not self.value or not all(0x21 <= ord(c) <= 0x7e for c in self.value):
            raise ValueError("--restrict-value-file: the value must be one line of printable ASCII without spaces "
                             "(the file's content is not shown)")

    @classmethod
    def from_file(cls, protocols: str | tuple[str, ...] | None, key: str, value_file: str | Path) -> "Restriction":
        """The restriction whose value is the one line of ``value_file`` (a trailing newline is
        not part of it). ``protocols``: comma-separated or a tuple; None: every one but health."""
        path = _readable("--restrict-value-file", value_file)
        text = path.read_text(encoding="ascii", errors="replace")
        if isinstance(protocols, str):
            protocols = tuple(p.strip() for p in protocols.split(","))
        value = text.removesuffix("\n").removesuffix("\r")
        return cls(tuple(protocols) if protocols is not None else DEFAULT_RESTRICTED, key, value)

    @property
    def grpc_header(self) -> str:
        """The header name gRPC clients must send (Triton prefixes the key)."""
        return GRPC_HEADER_PREFIX + self.key

    def triton_args(self) -> list[str]:
        group = f"{','.join(self.protocols)}:{self.key}={self.value}"
        return [f"--grpc-restricted-protocol={group}", f"--http-restricted-api={group}"]

    def http_headers(self, protocol: str) -> dict[str, str]:
        """The header an HTTP request of ``protocol`` needs (none when it is open)."""
        return {self.key: self.value} if protocol in self.protocols else {}

    def describe(self) -> str:
        open_ = [p for p in PROTOCOLS if p not in self.protocols]
        return (f"restricted: {', '.join(self.protocols)} need header '{self.grpc_header}' (gRPC) or "
                f"'{self.key}' (HTTP)" + (f"; open: {', '.join(open_)}" if open_ else ""))
