"""What makes the autoscaler's metric exist: Prometheus scrapes Triton, prometheus-adapter serves
queue time per request to the HPA.

On a standard kube-prometheus-stack, Prometheus finds targets through the Prometheus Operator's
``ServiceMonitor`` / ``PodMonitor`` objects (not ``prometheus.io`` annotations), and only those
carrying the label its ``serviceMonitorSelector`` asks for (the chart's default: ``release: <its
Helm release>``; ``rfad-export k8s --monitor-label``). Its targets get ``namespace`` and ``pod``
labels, which the adapter rule maps to the pods the HPA scales. The rule follows NVIDIA's Triton
chart (server repository, ``deploy/k8s-onprem``), for ``rfad_pipeline`` only, whose queue is
where waiting requests pile up (the component models' queues hold the dynamic batcher's few
milliseconds).
"""

from __future__ import annotations

from rfad.contract import PIPELINE_MODEL
from rfad.export.k8s_serving import QUEUE_METRIC, SCRAPE_LABEL, Fleet, labels

SCRAPE_INTERVAL = "15s"
MONITOR_API = "monitoring.coreos.com/v1"


def _metadata(fleet: Fleet, name: str, component: str) -> dict:
    return {"name": name, "labels": {**labels(fleet, component), **dict(fleet.monitor_labels)}}


def service_monitor(fleet: Fleet) -> dict:
    """Scrape every serving pod once, through the ClusterIP Service (the headless one shares its
    pods, so it is not selected)."""
    return {"apiVersion": MONITOR_API, "kind": "ServiceMonitor", "metadata": _metadata(fleet, fleet.name, "serving"),
            "spec": {"selector": {"matchLabels": {**labels(fleet, "serving"), SCRAPE_LABEL[0]: SCRAPE_LABEL[1]}},
                     "endpoints": [{"port": "metrics", "path": "/metrics", "interval": SCRAPE_INTERVAL}]}}


def pod_monitor(fleet: Fleet, name: str, selector: dict, component: str = "serving",
                port: str = "metrics") -> dict:
    """Scrape the pods of ``selector`` directly (no Service needed: the KServe predictor's pods, or
    ``--monitor podmonitor``)."""
    return {"apiVersion": MONITOR_API, "kind": "PodMonitor", "metadata": _metadata(fleet, name, component),
            "spec": {"selector": {"matchLabels": selector},
                     "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": SCRAPE_INTERVAL}]}}


def adapter_rule(prometheus_url: str) -> dict:
    """prometheus-adapter's Helm values (prometheus-community/prometheus-adapter): the Prometheus it
    queries (``prometheus_url``, e.g. ``http://prometheus-operated.monitoring.svc:9090``) and the
    rule that turns Triton's counters into :data:`QUEUE_METRIC`: microseconds in the queue per
    successful request over the last minute, per pod."""
    base, _, port = prometheus_url.rpartition(":")
    if not base.startswith(("http://", "https://")) or not port.isdigit():
        raise ValueError(f"--prometheus-url: {prometheus_url!r} is not http(s)://host:port")
    series = f'model="{PIPELINE_MODEL}"'
    query = (f"avg(delta(nv_inference_queue_duration_us{{<<.LabelMatchers>>,{series}}}[1m]) / "
             f"(1 + delta(nv_inference_request_success{{<<.LabelMatchers>>,{series}}}[1m]))) by (<<.GroupBy>>)")
    return {"prometheus": {"url": base, "port": int(port)}, "rules": {"custom": [{
        "seriesQuery": f'nv_inference_queue_duration_us{{{series},namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "nv_inference_queue_duration_us", "as": QUEUE_METRIC},
        "metricsQuery": query,
    }]}}


def monitoring(fleet: Fleet) -> list[dict]:
    """The serving fleet's scrape object: a ServiceMonitor, or a PodMonitor (``--monitor podmonitor``)."""
    if fleet.monitor == "podmonitor":
        return [pod_monitor(fleet, fleet.name, labels(fleet, "serving"))]
    return [service_monitor(fleet)]
