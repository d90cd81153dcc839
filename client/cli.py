"""``rfad-client``: generate ad images from a running rfad server, or check its health."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rfad.client.client import RfadClient, RfadClientError


@click.group()
def main() -> None:
    """Talk to an rfad Triton server over gRPC."""


@main.command()
@click.option("--url", default="127.0.0.1:8001", show_default=True, help="Triton gRPC host:port.")
@click.option("--product", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prompt", required=True)
@click.option("--caption", default="")
@click.option("--negative-prompt", default="")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int)
@click.option("--steps", type=int)
@click.option("--guidance", "guidance_scale", type=float)
@click.option("--controlnet-scale", type=float)
@click.option("--candidates", type=int)
@click.option("--max-attempts", type=int)
@click.option("--num-images", type=int)
@click.option("--threshold", type=float)
@click.option("--deadline", "deadline_s", type=float, help="Seconds before the request is abandoned.")
def generate(url, product, prompt, caption, negative_prompt, out, deadline_s, **settings) -> None:
    """Generate images for PRODUCT; writes OUT/image-N.png and OUT/result.json."""
    try:
        result = RfadClient(url).generate(product, prompt, caption=caption, negative_prompt=negative_prompt,
                                          deadline_s=deadline_s, **settings)
    except RfadClientError as exc:
        raise click.ClickException(f"{exc.status or 'error'}: {exc}") from None
    paths = result.save(out)
    summary = {"images": [str(p) for p in paths], "available": result.available, "seeds": result.seeds,
               "attempts": result.attempts, "probabilities": result.verdicts(), "latency_s": round(result.latency_s, 3)}
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(f"{len(paths)} image(s) in {out}; available {result.available}; attempts {result.attempts}; "
               f"{result.latency_s:.2f} s")


@main.command()
@click.option("--url", default="127.0.0.1:8001", show_default=True)
def health(url) -> None:
    """Exit 0 if the server is ready, 1 if not."""
    if not RfadClient(url).is_ready():
        raise click.ClickException(f"{url} is not ready")
    click.echo(f"{url} ready")
