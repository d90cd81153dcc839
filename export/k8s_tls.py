"""TLS and restricted protocols for the serving Deployment: what ``rfad-export k8s --tls-secret``,
``--tls-mutual``, ``--cert-manager-issuer`` and ``--restrict-secret`` add to the manifests.

- TLS at Triton: a Secret (``tls.crt``, ``tls.key``, and ``ca.crt`` for mutual TLS: the layout of
  ``kubernetes.io/tls`` Secrets and of cert-manager's) mounted read-only, and Triton's gRPC TLS
  flags pointing at it (the same flags ``rfad-serve --tls-*`` passes: :mod:`rfad.serving.security`).
- Probes stay plain HTTP on ``/v2/health/*``: Triton's HTTP endpoint has no TLS, and kubelet
  probes are not pod traffic, so the NetworkPolicy then admits clients to the gRPC port only
  (plain-text inference over HTTP would go around TLS).
- cert-manager (optional): a ``Certificate`` that keeps the Secret issued and renewed, for the
  Services' DNS names. Triton reads the files at start: a renewed certificate is served once the
  pods restart.
- A restricted header: the value comes from a Secret through an environment variable that
  Kubernetes expands in the container's arguments (``$(VAR)``), so no manifest holds it; health
  stays open for the probes.
- The fleet's own clients (the catalog Job's ``rfad-client batch``) reach the pods through the
  headless Service, by IP address: under TLS they mount a client Secret (``--client-tls-secret``:
  ``ca.crt``, and ``tls.crt``/``tls.key`` of a client certificate for mutual TLS) and verify the
  name ``<name>-pods`` on every pod; the header reaches them through ``RFAD_CLIENT_HEADERS``,
  expanded by Kubernetes from the same Secret, never in their arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from rfad.contract import TRITON_PORTS
from rfad.serving.security import DEFAULT_RESTRICTED, Restriction, ServerTls

TLS_MOUNT = PurePosixPath("/etc/rfad/tls")
CLIENT_TLS_MOUNT = PurePosixPath("/etc/rfad/client-tls")
# rfad-client's header variable (rfad.client.security.HEADERS_ENV, tested equal): the export
# stage does not import the client (docs/design.md, layers).
CLIENT_HEADERS_ENV = "RFAD_CLIENT_HEADERS"
RESTRICT_ENV = "RFAD_RESTRICT_VALUE"
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@dataclass(frozen=True)
class FleetSecurity:
    """What the operator asks for. ``tls_secret``: the Secret with the server's certificate and
    key (and ``ca.crt`` when ``mutual``); ``cert_manager_issuer``: let cert-manager's Issuer (or
    ClusterIssuer) of that name keep it; ``restrict_secret``: a Secret whose key ``value`` every
    protocol but health requires in the header ``restrict_header``; ``client_tls_secret``: the
    Secret the fleet's own clients (the catalog Job) mount under TLS: ``ca.crt`` (the CA that
    signed the servers' certificate), and ``tls.crt``/``tls.key`` of a client certificate when
    ``mutual``."""

    tls_secret: str | None = None
    mutual: bool = False
    cert_manager_issuer: str | None = None
    cert_manager_issuer_kind: str = "Issuer"
    restrict_secret: str | None = None
    restrict_header: str = "rfad-key"
    client_tls_secret: str | None = None

    def __post_init__(self) -> None:
        for flag, name in (("--tls-secret", self.tls_secret), ("--cert-manager-issuer", self.cert_manager_issuer),
                           ("--restrict-secret", self.restrict_secret),
                           ("--client-tls-secret", self.client_tls_secret)):
            if name is not None and not _NAME.fullmatch(name):
                raise ValueError(f"{flag}: {name!r} is not a Kubernetes object name")
        if self.tls_secret is None and (self.mutual or self.cert_manager_issuer or self.client_tls_secret):
            flag = "--tls-mutual" if self.mutual else ("--cert-manager-issuer" if self.cert_manager_issuer
                                                       else "--client-tls-secret")
            raise ValueError(f"{flag} needs --tls-secret (the Secret the certificate is in)")
        if self.cert_manager_issuer_kind not in ISSUER_KINDS:
            raise ValueError(f"--cert-manager-issuer-kind: {self.cert_manager_issuer_kind!r} is not one of "
                             f"{', '.join(ISSUER_KINDS)}")
        self.restriction()  # checks the header name

    def clients_can_connect(self) -> bool:
        """Whether the fleet's own clients have what they need: plain gRPC, or a client Secret under TLS."""
        return self.tls_secret is None or self.client_tls_secret is not None

    def server_tls(self) -> ServerTls | None:
        if self.tls_secret is None:
            return None
        return ServerTls(TLS_MOUNT / "tls.crt", TLS_MOUNT / "tls.key", TLS_MOUNT / "ca.crt" if self.mutual else None)

    def restriction(self) -> Restriction | None:
        if self.restrict_secret is None:
            return None
        return Restriction(DEFAULT_RESTRICTED, self.restrict_header, f"$({RESTRICT_ENV})")


def _flags(args: list[str]) -> list[str]:
    """``["--a", "x", "--b=y"]`` as ``["--a=x", "--b=y"]``, the manifests' style."""
    flags, pending = [], None
    for arg in args:
        if pending is not None:
            flags.append(f"{pending}={arg}")
            pending = None
        elif "=" in arg:
            flags.append(arg)
        else:
            pending = arg
    return flags


def secure_server(container: dict, volumes: list[dict], security: FleetSecurity) -> None:
    """Add the TLS Secret's volume and mount, the TLS and restriction flags and the restriction's
    environment variable to the tritonserver ``container`` and the pod's ``volumes``."""
    tls, restriction = security.server_tls(), security.restriction()
    if tls is not None:
        # 0440 with the pod's fsGroup: readable by Triton's user, by nobody else in the container.
        volumes.append({"name": "tls", "secret": {"secretName": security.tls_secret, "defaultMode": 0o440}})
        container["volumeMounts"].append({"name": "tls", "mountPath": str(TLS_MOUNT), "readOnly": True})
        container["args"] += _flags(tls.triton_args())
    if restriction is not None:
        container["env"].append({"name": RESTRICT_ENV, "valueFrom": {"secretKeyRef": {
            "name": security.restrict_secret, "key": "value"}}})
        container["args"] += restriction.triton_args()


def secure_client(container: dict, volumes: list[dict], security: FleetSecurity, server_name: str) -> None:
    """Make the ``rfad-client`` ``container`` (its ``command`` ends with rfad-client's flags) a client
    of the secured fleet: under TLS the client Secret mounted and ``--ca`` (``--cert``/``--key`` for
    mutual TLS) and ``--tls-server-name server_name`` added (``dns:///`` reaches the pods by IP
    address, which the certificate does not name); the restricted header in ``RFAD_CLIENT_HEADERS``,
    expanded by Kubernetes from the Secret's value (never in the arguments)."""
    if security.tls_secret is not None:
        if security.client_tls_secret is None:
            raise ValueError("--client-tls-secret: the fleet's clients need the CA (and, for --tls-mutual, "
                             "a client certificate) under TLS")
        volumes.append({"name": "client-tls", "secret": {"secretName": security.client_tls_secret,
                                                         "defaultMode": 0o440}})
        container["volumeMounts"].append({"name": "client-tls", "mountPath": str(CLIENT_TLS_MOUNT), "readOnly": True})
        container["command"] += ["--ca", str(CLIENT_TLS_MOUNT / "ca.crt"), "--tls-server-name", server_name]
        if security.mutual:
            container["command"] += ["--cert", str(CLIENT_TLS_MOUNT / "tls.crt"),
                                     "--key", str(CLIENT_TLS_MOUNT / "tls.key")]
    restriction = security.restriction()
    if restriction is not None:
        # Dependent environment variables: Kubernetes expands $(VAR) from the ones listed before.
        container["env"] += [{"name": RESTRICT_ENV, "valueFrom": {"secretKeyRef": {
            "name": security.restrict_secret, "key": "value"}}},
            {"name": CLIENT_HEADERS_ENV, "value": f"{restriction.grpc_header}=$({RESTRICT_ENV})"}]


def client_ports(security: FleetSecurity | None, ports: dict[str, int]) -> list[int]:
    """The ports clients may reach: gRPC and HTTP, or gRPC only under TLS (HTTP has none)."""
    if security is not None and security.tls_secret is not None:
        return [ports["grpc"]]
    return [ports["http"], ports["grpc"]]


def certificate(security: FleetSecurity, name: str, namespace: str | None, labels: dict) -> dict:
    """cert-manager's ``Certificate`` for the Services ``name``, ``name-pods`` and KServe's
    ``name-kserve-grpc`` (every DNS form a client in the cluster uses), written into the TLS Secret
    and renewed before it expires."""
    namespace = namespace or "default"
    dns = [f"{service}{suffix}" for service in (name, f"{name}-pods", f"{name}-kserve-grpc")
           for suffix in ("", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.cluster.local")]
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"{name}-tls", "labels": labels},
            "spec": {"secretName": security.tls_secret, "dnsNames": dns, "usages": ["server auth"],
                     "duration": "2160h", "renewBefore": "360h",
                     "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                     "issuerRef": {"name": security.cert_manager_issuer, "kind": security.cert_manager_issuer_kind,
                                   "group": "cert-manager.io"}}}


def readme_lines(security: FleetSecurity, deployments: list[str], name: str, namespace: str | None) -> list[str]:
    """The README's section on the Secrets to create and the flags clients need (``deployments``:
    the serving Deployments' names, one per GPU model)."""
    ns = f" -n {namespace}" if namespace else ""
    lines, client = ["", "## TLS and the restricted header", ""], []
    if security.tls_secret is not None:
        files = "tls.crt, tls.key" + (", ca.crt" if security.mutual else "")
        ca = " --from-file=ca.crt=client-ca.crt" if security.mutual else ""
        source = (f"cert-manager keeps it (`certificate.yaml`, {security.cert_manager_issuer_kind} "
                  f"`{security.cert_manager_issuer}`)" if security.cert_manager_issuer else
                  f"create it first: `kubectl{ns} create secret generic {security.tls_secret} "
                  f"--from-file=tls.crt=server.crt --from-file=tls.key=server.key{ca}`; its certificate must "
                  f"name `{name}` and `{name}-pods` (with the namespace forms clients use)")
        restart = ", ".join(f"`kubectl{ns} rollout restart deployment/{deployment}`" for deployment in deployments)
        lines.append(f"- TLS{' (mutual)' if security.mutual else ''} on gRPC: the pods mount the Secret "
                     f"`{security.tls_secret}` ({files}); {source}. Triton reads it at start: after a renewal, "
                     f"{restart}. Clients reach the gRPC port only (Triton's HTTP has no TLS; the probes still use it).")
        # dns:/// reaches the pods by IP address, which no certificate names.
        client += ["--tls-server-name", f"{name}-pods", "--ca ca.crt"]
        client += ["--cert client.crt --key client.key"] if security.mutual else []
    if security.restrict_secret is not None:
        restriction = security.restriction()
        lines.append(f"- Every protocol but health needs the header `{restriction.grpc_header}` (gRPC; "
                     f"`{restriction.key}` over HTTP) carrying the key `value` of the Secret "
                     f"`{security.restrict_secret}`: `kubectl{ns} create secret generic {security.restrict_secret} "
                     "--from-file=value=token.txt` (one line, printable ASCII, no spaces).")
        client.append(f'--header "{restriction.grpc_header}=$(cat token.txt)"')
    tls_note = (f" (`--tls-server-name {name}-pods`: `dns:///` connects to the pods' IP addresses, which the "
                f"certificate does not name; the client verifies that name on every pod it finds)"
                if security.tls_secret is not None else "")
    lines.append(f"- Check from a labelled pod: `rfad-client health --url dns:///{name}-pods:{TRITON_PORTS['grpc']} "
                 f"{' '.join(client)}`{tls_note}.")
    if security.tls_secret is not None:
        lines.append(f"- KServe's predictors (`kserve/`) have the same TLS and header; address them as `--url "
                     f"dns:///{name}-kserve-grpc:9000 --tls-server-name {name}-kserve-grpc`.")
    return lines
