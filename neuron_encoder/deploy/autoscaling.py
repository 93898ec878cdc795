"""Scale a SageMaker endpoint with Application Auto Scaling: AWS's engine, not a loop of our own.

The variant's instance count is a scalable target between --min and --max; a target-tracking policy
on SageMakerVariantInvocationsPerInstance ("the average number of times per minute that each
instance for a variant is invoked", SageMaker developer guide, endpoint-auto-scaling-add-code-define)
adds instances when each one gets more requests per minute than the target. The target can come
from a benchmark: what one instance sustained, per minute, times a safety factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bench.results import ResultFileError, read_result
from ..errors import ConfigError
from .aws import Aws

VARIANT = "AllTraffic"  # the one production variant our endpoint configs have
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
SAFETY = 0.5  # what CDK's scaleOnInvocations uses by default: headroom for bursts and cold instances
COOLDOWN_OUT_S = 60
COOLDOWN_IN_S = 300


def resource_id(endpoint: str, variant: str = VARIANT) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def policy_name(endpoint: str) -> str:
    return f"{endpoint}-invocations"


@dataclass(frozen=True)
class Target:
    """Invocations per instance per minute, and the arithmetic behind it (printed, so it can be checked)."""

    value: float
    arithmetic: str


def target_from_bench(path: str | Path, safety: float = SAFETY, texts_per_request: int = 1,
                      engine: str | None = None) -> Target:
    """The sustainable throughput of one instance (inferences/s) x 60 / texts per request x safety.

    Sustainable: the best throughput within the run's p99 SLO when the file has an SLO search, else
    the best average throughput of a row without errors; `engine` picks one engine's numbers.
    """
    if not 0 < safety <= 1:
        raise ConfigError(f"safety factor must be within (0, 1], got {safety}")
    if texts_per_request < 1:
        raise ConfigError(f"texts per request must be >= 1, got {texts_per_request}")
    result = read_result(path)
    slo = [e for e in result.slo if engine in (None, e["engine"])]
    rows = [r for r in result.rows if engine in (None, r.engine) and r.errors == 0 and r.throughput_avg > 0]
    if slo:
        best = max(slo, key=lambda e: e["best_throughput"])
        throughput = best["best_throughput"]
        source = f"{best['engine']} best throughput within p99 {best['slo_p99_ms']:g} ms"
    elif rows:
        row = max(rows, key=lambda r: r.throughput_avg)
        throughput = row.throughput_avg
        source = f"{row.engine} batch {row.batch_size} concurrency {row.concurrency} average throughput"
    else:
        raise ResultFileError(f"{path}: no error-free row{' for engine ' + engine if engine else ''} to size "
                             "the scaling target from")
    value = round(throughput * 60 / texts_per_request * safety, 1)
    arithmetic = (f"{source} {throughput:g} inferences/s x 60 s / {texts_per_request} text(s) per request x "
                  f"safety {safety:g} = {value:g} invocations per instance per minute")
    return Target(value, arithmetic)


def scalable_target_params(endpoint: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {"ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint), "ScalableDimension": DIMENSION,
            "MinCapacity": minimum, "MaxCapacity": maximum}


def policy_params(endpoint: str, target: float) -> dict[str, Any]:
    return {"PolicyName": policy_name(endpoint), "ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint),
            "ScalableDimension": DIMENSION, "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": target, "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
                "ScaleOutCooldown": COOLDOWN_OUT_S, "ScaleInCooldown": COOLDOWN_IN_S}}


def register(aws: Aws, endpoint: str, minimum: int, maximum: int, target: float) -> None:
    """The scalable target, then the policy on it."""
    if not 1 <= minimum <= maximum:
        raise ConfigError(f"need 1 <= --min <= --max, got min {minimum}, max {maximum}")
    if target <= 0:
        raise ConfigError(f"the invocations target must be > 0 per instance per minute, got {target}")
    aws.call("application-autoscaling", "register_scalable_target", scalable_target_params(endpoint, minimum, maximum))
    aws.call("application-autoscaling", "put_scaling_policy", policy_params(endpoint, target))


def deregister(aws: Aws, endpoint: str) -> list[str]:
    """Policy, then scalable target; skips what is not registered (an endpoint deployed without scaling)."""
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint), "ScalableDimension": DIMENSION}
    steps = [("delete_scaling_policy", {"PolicyName": policy_name(endpoint), **target}),
             ("deregister_scalable_target", target)]
    return aws.delete_each("application-autoscaling", steps, {"ObjectNotFoundException", "ValidationException"},
                           resource_id(endpoint))
