"""``rfad-export k8s``: the click command (registered on the ``rfad-export`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from rfad.deploy.profiles import DEFAULT_GPU_PROFILE


def _label(_ctx, _param, value: str) -> tuple[str, str]:
    key, sep, label = value.partition("=")
    if not sep or not key or not label:
        raise click.BadParameter(f"{value!r}: expected KEY=VALUE, e.g. rfad-client=true")
    return key, label


def _labels(ctx, param, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(_label(ctx, param, value) for value in values)


@click.command("k8s")
@click.option("--repo-uri", required=True,
              help="Where the model repositories lie: s3://, gs://, https:// (copied by an init container) or "
                   "pvc://CLAIM[/path] (mounted read-only); each GPU model's is REPO_URI/<export hash>/<gpu>.")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The export served (rfad-export onnx): the hash of its manifest.json names the repositories.")
@click.option("--image", required=True, help="Container image: NVIDIA's tritonserver with rfad installed (deploy/Dockerfile --target serve).")
@click.option("--profile", "profile_name", default=DEFAULT_GPU_PROFILE, show_default=True,
              help="Deployment profile: datacenter or edge (docs/deploying.md).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder (replaced).")
@click.option("--name", default="rfad", show_default=True, help="Name of the Deployment, Services and Jobs.")
@click.option("--namespace", default="rfad", show_default=True, help="Namespace set by the kustomizations ('' for none).")
@click.option("--client-label", default="rfad-client=true", show_default=True, callback=_label,
              help="Pod label that admits a client through the NetworkPolicy.")
@click.option("--monitoring-namespace", default="monitoring", show_default=True,
              help="Namespace whose pods may scrape the metrics port.")
@click.option("--storage-secret", help="Secret with the storage credentials for the init container (envFrom).")
@click.option("--data-claim", default="rfad-data", show_default=True,
              help="ReadWriteMany PersistentVolumeClaim of the Jobs (mounted at /data): RF1M, engines, catalog.")
@click.option("--gpu-product", "gpu_products", multiple=True,
              help="nvidia.com/gpu.product label of nodes to serve on, one Deployment each (repeat the flag) "
                   "[default: the profile's; edge has none: name your Jetson's].")
@click.option("--engine-image", help="Image of the engine-build Jobs (deploy/Dockerfile --target engines) "
                                     "[default: --image with -engines appended to its tag].")
@click.option("--prometheus-url", default="http://prometheus-operated.monitoring.svc:9090", show_default=True,
              help="The Prometheus prometheus-adapter queries (http(s)://host:port).")
@click.option("--monitor", default="servicemonitor", show_default=True,
              type=click.Choice(["servicemonitor", "podmonitor"]), help="How Prometheus finds the serving pods.")
@click.option("--monitor-label", "monitor_labels", multiple=True, callback=_labels,
              help="Label the Prometheus Operator selects monitors by (repeat the flag) [default: "
                   "release=kube-prometheus-stack].")
@click.option("--catalog-shards", type=click.IntRange(1, 10000),
              help="Shards of the catalog Job [default: the profile's max_replicas].")
@click.option("--tls-secret", help="Secret with tls.crt and tls.key (and ca.crt for --tls-mutual): TLS on gRPC, "
                                   "which then is the only port clients may reach.")
@click.option("--tls-mutual", is_flag=True, help="Clients must present a certificate signed by the Secret's ca.crt.")
@click.option("--cert-manager-issuer", help="Write a cert-manager Certificate that keeps --tls-secret issued by "
                                            "this issuer and renewed.")
@click.option("--cert-manager-issuer-kind", type=click.Choice(["Issuer", "ClusterIssuer"]), default="Issuer",
              show_default=True, help="Kind of --cert-manager-issuer.")
@click.option("--restrict-secret", help="Secret whose key 'value' every protocol but health requires in a header.")
@click.option("--restrict-header", default="rfad-key", show_default=True,
              help="Name of that header (gRPC clients send it as triton-grpc-protocol-NAME).")
@click.option("--client-tls-secret", help="Secret the catalog Job's clients mount under TLS: ca.crt (the CA of the "
                                          "servers' certificate), and tls.crt, tls.key of a client certificate "
                                          "for --tls-mutual [default: no catalog Job under TLS].")
def k8s(repo_uri, onnx_dir, image, profile_name, out, name, namespace, client_label, monitoring_namespace,
        storage_secret, data_claim, gpu_products, engine_image, prometheus_url, monitor, monitor_labels,
        catalog_shards, tls_secret, tls_mutual, cert_manager_issuer, cert_manager_issuer_kind, restrict_secret,
        restrict_header, client_tls_secret) -> None:
    """Kubernetes manifests (Kustomize) for the edge or datacenter profile: serving, KServe, engine,
    catalog and RF1M Jobs."""
    from rfad.export.k8s import write_k8s
    from rfad.export.k8s_tls import FleetSecurity

    try:
        security = None
        if tls_secret or tls_mutual or cert_manager_issuer or restrict_secret or client_tls_secret:
            security = FleetSecurity(tls_secret, tls_mutual, cert_manager_issuer, cert_manager_issuer_kind,
                                     restrict_secret, restrict_header, client_tls_secret)
        files = write_k8s(out, profile_name, image, repo_uri, onnx_dir, name=name, namespace=namespace or None,
                          data_claim=data_claim, gpu_products=gpu_products, engine_image=engine_image,
                          client_label=client_label, monitoring_namespace=monitoring_namespace,
                          storage_secret=storage_secret, prometheus_url=prometheus_url, monitor=monitor,
                          monitor_labels=monitor_labels or (("release", "kube-prometheus-stack"),),
                          catalog_shards=catalog_shards, security=security)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{sum(len(d) for d in files.values())} objects in {len(files)} files written to {out} "
               f"(see {out / 'README.md'})")
