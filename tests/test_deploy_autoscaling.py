"""Application Auto Scaling: the target from a benchmark file with its arithmetic, the exact requests, roundtrip."""

from __future__ import annotations

import json

import pytest

from neuron_encoder.bench.results import ResultFileError
from neuron_encoder.deploy import autoscaling
from neuron_encoder.deploy.aws import Aws
from neuron_encoder.errors import ConfigError
from tests.moto_server import FIXTURE_RESULTS, REGION, boto


def test_the_target_comes_from_the_slo_search_when_the_file_has_one():
    target = autoscaling.target_from_bench(FIXTURE_RESULTS / "inf2-xlarge-neuron.json")
    slo = json.loads((FIXTURE_RESULTS / "inf2-xlarge-neuron.json").read_text())["slo"][0]
    assert target.value == round(slo["best_throughput"] * 60 * 0.5, 1)
    assert target.arithmetic == (f"neuron best throughput within p99 10 ms {slo['best_throughput']:g} inferences/s "
                                 f"x 60 s / 1 text(s) per request x safety 0.5 = {target.value:g} invocations per "
                                 "instance per minute")


def test_without_an_slo_the_best_error_free_row_and_texts_per_request_divide():
    data = json.loads((FIXTURE_RESULTS / "c6i-xlarge-cpu.json").read_text())
    best = max(r["throughput_avg"] for r in data["rows"] if r["errors"] == 0)
    assert not data["slo"]
    target = autoscaling.target_from_bench(FIXTURE_RESULTS / "c6i-xlarge-cpu.json", safety=0.8, texts_per_request=4)
    assert target.value == round(best * 60 / 4 * 0.8, 1) and "/ 4 text(s) per request x safety 0.8" in target.arithmetic


def test_bad_bench_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="safety factor must be within"):
        autoscaling.target_from_bench(FIXTURE_RESULTS / "inf2-xlarge-neuron.json", safety=1.5)
    with pytest.raises(ResultFileError, match="no such result file"):
        autoscaling.target_from_bench(tmp_path / "missing.json")
    with pytest.raises(ResultFileError, match="no error-free row for engine cuda-fp16"):
        autoscaling.target_from_bench(FIXTURE_RESULTS / "inf2-xlarge-neuron.json", engine="cuda-fp16")


def test_the_requests():
    assert autoscaling.scalable_target_params("e", 1, 4) == {
        "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 1, "MaxCapacity": 4}
    policy = autoscaling.policy_params("e", 120.0)
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}


def test_bad_bounds_stop_before_any_call(aws_env):
    aws = Aws(REGION, dry_run=True, echo=lambda line: None)
    with pytest.raises(ConfigError, match="need 1 <= --min <= --max"):
        autoscaling.register(aws, "e", 3, 2, 100.0)
    assert aws.planned == []


def test_register_then_deregister(aws_env):
    aws = Aws(REGION)
    autoscaling.register(aws, "e", 1, 2, 60.0)
    client = boto("application-autoscaling")
    assert len(client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]) == 1
    assert len(autoscaling.deregister(aws, "e")) == 2
    assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
