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


@click.command("k8s")
@click.option("--repo-uri", required=True,
              help="Where the model repository lies: s3://, gs://, https:// (copied by an init container) or "
                   "pvc://CLAIM[/path] (mounted read-only).")
@click.option("--image", required=True, help="Container image: NVIDIA's tritonserver with rfad installed (deploy/Dockerfile).")
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
              help="ReadWriteMany PersistentVolumeClaim of the RF1M Jobs (mounted at /data).")
def k8s(repo_uri, image, profile_name, out, name, namespace, client_label, monitoring_namespace, storage_secret,
        data_claim) -> None:
    """Kubernetes manifests (Kustomize) for the edge or datacenter profile: serving, KServe, RF1M Jobs."""
    from rfad.export.k8s import write_k8s

    try:
        files = write_k8s(out, profile_name, image, repo_uri, name=name, namespace=namespace or None,
                          data_claim=data_claim, client_label=client_label,
                          monitoring_namespace=monitoring_namespace, storage_secret=storage_secret)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{sum(len(d) for d in files.values())} objects in {len(files)} files written to {out} "
               f"(see {out / 'README.md'})")
