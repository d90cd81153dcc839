"""How long a serving pod may take to stop without losing a request, from its profile.

A pod that stops first keeps serving for ``endpoint_drop_seconds`` (the Service and cluster DNS
drop it meanwhile), then refuses new ``rfad_pipeline`` requests and waits for the loops in flight
(:mod:`rfad.serving.draining`, the preStop hook), at most the worst-case loop: every attempt the
profile allows, each at the longest step count a request may ask for, at the profile's estimated
step and attempt times. Triton's own ``--exit-timeout-secs`` is that worst case as well (it
covers what is left in flight when the signal comes, e.g. a judge request); the grace period
exceeds the preStop and the exit timeout together, so Kubernetes never kills a draining pod.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rfad.contract import DEFAULT_LIMITS
from rfad.deploy.profiles import DeploymentProfile

GRACE_MARGIN_SECONDS = 30  # process start-up of the preStop hook, Triton's own unloading


@dataclass(frozen=True)
class DrainTimes:
    endpoint_drop_s: int  # serving on while the pod leaves the Service and DNS
    worst_loop_s: int  # the longest rfad_pipeline request the profile allows (estimate)
    exit_timeout_s: int  # tritonserver --exit-timeout-secs
    grace_s: int  # terminationGracePeriodSeconds

    @property
    def pre_stop_s(self) -> int:
        """The preStop hook's longest run: endpoint drop, then the drain."""
        return self.endpoint_drop_s + self.worst_loop_s


def drain_times(profile: DeploymentProfile) -> DrainTimes:
    """The drain times of a Kubernetes profile (its KubernetesSizing's estimates and its caps)."""
    k8s = profile.kubernetes
    if k8s is None:
        raise ValueError(f"profile {profile.name}: not a Kubernetes profile")
    steps = DEFAULT_LIMITS.steps[1]  # the most a request may ask for
    worst = math.ceil(profile.pipeline.max_attempts_cap * (steps * k8s.step_seconds + k8s.attempt_seconds))
    return DrainTimes(endpoint_drop_s=k8s.endpoint_drop_seconds, worst_loop_s=worst, exit_timeout_s=worst,
                      grace_s=k8s.endpoint_drop_seconds + 2 * worst + GRACE_MARGIN_SECONDS)
