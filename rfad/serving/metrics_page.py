"""Reading Triton's Prometheus metrics page (``/metrics``): the samples of one metric, summed.

The drain (:mod:`rfad.serving.draining`) and the tests read a handful of series by name and
labels; the page is Prometheus' text format, one ``name{label="value",...} number`` line per
sample, which is all this module reads (no histograms, timestamps or escapes are needed).
Standard library only, so it runs in the serving image without the client's dependencies.
"""

from __future__ import annotations

import re
import urllib.request

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


# Straight to the server, never through an http_proxy of the environment (the drain reads its own
# pod's or machine's page; a proxy would answer for another, or not at all), as the launcher's calls.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_metrics(url: str, timeout_s: float = 10.0) -> str:
    """The text of the metrics page at ``url`` (``http://host:8002/metrics``)."""
    with _DIRECT.open(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8", errors="replace")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` on the page: (labels, value)."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            found.append((dict(_LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return found


def metric_sum(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels``; None when there is none."""
    values = [value for found, value in samples(text, name) if all(found.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None
