"""The SageMaker route: image per region, version checks, model.tar.gz, and against moto the model, endpoint
config, endpoint, scalable target and policy that deploy creates and delete removes."""

from __future__ import annotations

import io
import tarfile

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from neuron_encoder.deploy import autoscaling, sagemaker
from neuron_encoder.deploy.aws import Aws
from neuron_encoder.errors import ArtifactError, DeployError
from tests.moto_server import REGION, boto, make_bucket, queue_invocation_result

ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
# moto's endpoint configs accept only an old list of instance types, without ml.inf2: tests use one it takes.
MOTO_INSTANCE = "ml.m5.large"
CPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.13.0-cpu-py312"


def neuron_manifest(**versions) -> dict:
    return {"backend": "neuron", "target": "inf2", "versions": {
        "torch": "2.9.1", "torch-neuronx": "2.9.0.2.15.32035", "neuronx-cc": "2.26.6360.0", **versions}}


def test_image_uri_per_region():
    assert sagemaker.image_uri("us-west-2") == ("763104351884.dkr.ecr.us-west-2.amazonaws.com/"
                                                "pytorch-inference-neuronx:2.9.0-neuronx-py312-sdk2.31.0-ubuntu24.04")
    with pytest.raises(DeployError, match="AWS lists no Neuron deep learning container in af-south-1: pass --image"):
        sagemaker.image_uri("af-south-1")
    assert sagemaker.image_versions(sagemaker.image_uri("us-east-1")) == {
        "torch": "2.9.0", "python": "312", "sdk": "2.31.0", "os": "ubuntu24.04"}
    assert sagemaker.image_versions(CPU_IMAGE) is None
    # aws/deep-learning-containers available_images.md: Taipei has Neuron containers, in the main account
    assert sagemaker.image_uri("ap-east-2").startswith("763104351884.dkr.ecr.ap-east-2.amazonaws.com/")


def test_versions_that_match_pass_and_what_cannot_be_checked_is_said():
    for tag in ("2.9.0-neuronx-py312-sdk2.31.0-ubuntu24.04", "2.9.0-neuronx-py312-sdk2.31.1-ubuntu24.04"):
        image = sagemaker.image_uri("us-east-1", tag)
        assert sagemaker.check_compatibility(neuron_manifest(), image, "ml.inf2.xlarge") == []
    assert "not checked" in sagemaker.check_compatibility(neuron_manifest(), CPU_IMAGE, "ml.inf2.xlarge")[0]
    newer = sagemaker.image_uri("us-east-1", "2.9.0-neuronx-py312-sdk2.40.0-ubuntu24.04")
    assert "neuronx-cc of SDK 2.40.0 is not known here" in sagemaker.check_compatibility(neuron_manifest(), newer,
                                                                                          "ml.inf2.xlarge")[0]


def test_an_artifact_from_another_compiler_than_the_images_is_refused_with_the_fix():
    """The Neuron 2.32 pair's compiler (2.27) against the 2.31 image's (2.26): recompile with the image's pair."""
    with pytest.raises(DeployError) as info:
        sagemaker.check_compatibility(neuron_manifest(**{"neuronx-cc": "2.27.5334.0"}),
                                      sagemaker.image_uri("us-east-1"), "ml.inf2.xlarge")
    assert str(info.value) == (
        "the artifact was compiled with neuronx-cc 2.27.5334.0, and SDK 2.31.0's image ships 2.26.6360.0: recompile "
        "it with that compiler, in a venv made with: python -m pip install neuronx-cc==2.26.6360.0 "
        "torch-neuronx==2.9.0.2.15.32035 --extra-index-url=https://pip.repos.neuron.amazonaws.com")


@pytest.mark.parametrize("manifest, instance_type, fragment", [
    (neuron_manifest(**{"torch-neuronx": "2.8.0.2.10.1"}), "ml.inf2.xlarge", "compiled with torch-neuronx 2.8.0"),
    ({"backend": "cpu", "versions": {"torch": "2.9.0"}}, "ml.inf2.xlarge", "compiled for cpu"),
    (neuron_manifest(), "ml.m5.large", "needs an Inferentia2 or Trainium instance"),
    ({**neuron_manifest(), "target": "trn2"}, "ml.inf2.xlarge", "compiled for trn2"),
    ({**neuron_manifest(), "target": "inf2"}, "ml.trn2.48xlarge", "compiled for inf2.*--target trn2"),
])
def test_artifacts_that_cannot_run_there_are_refused(manifest, instance_type, fragment):
    with pytest.raises(DeployError, match=fragment):
        sagemaker.check_compatibility(manifest, sagemaker.image_uri("us-east-1"), instance_type)


def test_model_tar_gz_layout(tiny_artifact, tmp_path):
    archive = sagemaker.package_model(tiny_artifact, tmp_path / "model.tar.gz")
    names = tarfile.open(archive).getnames()
    assert "artifact/manifest.json" in names and "code/inference.py" in names
    assert "code/neuron_encoder/runtime.py" in names and "code/neuron_encoder/deploy/commands.py" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_a_tampered_artifact_is_not_packaged(tiny_artifact, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_artifact, copy)
    (copy / "reference.pt").write_bytes(b"changed")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        sagemaker.package_model(copy, tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_the_ml_inf2_request_has_the_neuron_timeouts_and_one_worker_per_core():
    endpoint = sagemaker.Endpoint("e", "ml.inf2.xlarge", sagemaker.image_uri("us-east-1"), ROLE, "s3://b/k",
                                  sagemaker.container_environment(neuron_manifest(), "ml.inf2.xlarge"))
    variant = sagemaker.endpoint_config_params(endpoint)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["VariantName"]) == ("ml.inf2.xlarge", "AllTraffic")
    assert 60 <= variant["ContainerStartupHealthCheckTimeoutInSeconds"] <= 3600
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 900
    assert endpoint.environment == {"SAGEMAKER_PROGRAM": "inference.py",
                                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                                    "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600",
                                    "NEURON_RT_NUM_CORES": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    big = sagemaker.container_environment(neuron_manifest(), "ml.inf2.24xlarge")
    assert big["SAGEMAKER_MODEL_SERVER_WORKERS"] == "12"  # 6 chips x 2 NeuronCores, from the platform table


def test_moto_rejects_ml_inf2_in_endpoint_configs_hence_the_test_instance_type(aws_env):
    endpoint = sagemaker.Endpoint("e", "ml.inf2.xlarge", "i", ROLE, "s3://b/k", {})
    with pytest.raises(ClientError, match="ml.inf2.xlarge"):
        boto("sagemaker").create_endpoint_config(**sagemaker.endpoint_config_params(endpoint))


def test_deploy_then_delete(aws_env, tiny_artifact):
    bucket, printed = make_bucket(), []
    aws = Aws(REGION)
    described = sagemaker.deploy_endpoint(aws, tiny_artifact, MOTO_INSTANCE, bucket, ROLE, image=CPU_IMAGE,
                                          name="ne-test", scaling=sagemaker.Scaling(1, 3, 120.0), echo=printed.append)
    assert described["EndpointStatus"] == "InService"
    client = boto("sagemaker")
    model = client.describe_model(ModelName="ne-test")
    assert model["ExecutionRoleArn"] == ROLE and model["PrimaryContainer"]["Image"] == CPU_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{bucket}/neuron-encoder/endpoints/ne-test/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    variant = client.describe_endpoint_config(EndpointConfigName="ne-test")["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["ModelName"], variant["InitialInstanceCount"]) == (MOTO_INSTANCE,
                                                                                                "ne-test", 1)
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == sagemaker.STARTUP_HEALTH_CHECK_S
    archive = boto("s3").get_object(Bucket=bucket, Key="neuron-encoder/endpoints/ne-test/model.tar.gz")["Body"].read()
    assert "artifact/manifest.json" in tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    scaling = boto("application-autoscaling")
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        ("endpoint/ne-test/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 1, 3)]
    policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [(p["PolicyName"], p["PolicyType"]) for p in policies] == [("ne-test-invocations", "TargetTrackingScaling")]
    configuration = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert configuration["TargetValue"] == 120.0
    assert configuration["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert any("not checked" in line for line in printed)  # the CPU image's tag says no versions

    assert len(sagemaker.delete_all(aws, "ne-test", echo=printed.append)) == 5
    assert client.list_endpoints()["Endpoints"] == [] and client.list_models()["Models"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sagemaker.delete_all(aws, "ne-test", echo=printed.append) == []


def test_invoke_sends_the_contract_and_returns_the_vectors(aws_env, moto_endpoint):
    queue_invocation_result(moto_endpoint, "[[0.6, 0.8]]")  # moto answers from a queue; the request is ours
    assert sagemaker.invoke(Aws(REGION), "ne-test", sagemaker.invocation_body(["hello"])) == [[0.6, 0.8]]


@pytest.mark.parametrize("kwargs, body", [
    ({}, {"inputs": ["a", "b"], "normalize": True, "truncate": False}),
    ({"scores": True}, {"inputs": ["a", "b"], "truncate": False, "raw_scores": False}),
    ({"raw_scores": True, "truncate": True}, {"inputs": ["a", "b"], "truncate": True, "raw_scores": True}),
    ({"query": "q"}, {"query": "q", "texts": ["a", "b"], "truncate": False, "raw_scores": False}),
])
def test_invoke_sends_the_body_of_the_endpoints_task(kwargs, body):
    """An embedder's, a classifier's (/predict's) and a reranker's (/rerank's) /invocations bodies, which
    the SageMaker handler parses by the artifact's task as the server does."""
    assert sagemaker.invocation_body(["a", "b"], **kwargs) == body


def test_a_failed_endpoint_shows_its_failure_reason(aws_env):
    aws = Aws(REGION)
    failed = {"EndpointName": "e", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e",
              "EndpointConfigName": "e", "EndpointStatus": "Failed", "CreationTime": 0, "LastModifiedTime": 0,
              "FailureReason": "The image '...pytorch-inference-neuronx:9.9' does not exist."}
    with Stubber(aws.client("sagemaker")) as stubber:
        stubber.add_response("describe_endpoint", failed, {"EndpointName": "e"})  # the waiter's poll
        stubber.add_response("describe_endpoint", failed, {"EndpointName": "e"})  # the reason
        with pytest.raises(DeployError) as info:
            sagemaker.wait_in_service(aws, "e", delay=1, max_attempts=1)
    assert str(info.value).startswith("endpoint e did not come up: The image '...pytorch-inference-neuronx:9.9' "
                                      "does not exist. (pass --image with a tag that exists in this region")


def test_missing_pass_role_creates_nothing_and_says_what_to_add(aws_env, tiny_artifact):
    aws = Aws(REGION)
    with Stubber(aws.client("sagemaker")) as stubber:
        stubber.add_client_error("create_model", "AccessDeniedException",
                                 f"User: x is not authorized to perform: iam:PassRole on resource: {ROLE}")
        endpoint = sagemaker.Endpoint("e", MOTO_INSTANCE, CPU_IMAGE, ROLE, "s3://b/k", {})
        with pytest.raises(DeployError, match=f"you may not pass {ROLE} to sagemaker: add iam:PassRole") as info:
            sagemaker.create_endpoint(aws, endpoint, echo=lambda line: None)
    assert "deploy delete" not in str(info.value)  # nothing was created, so nothing to delete


def test_scaling_without_a_target_is_skipped_and_said(aws_env, tiny_artifact):
    printed = []
    sagemaker.deploy_endpoint(Aws(REGION), tiny_artifact, MOTO_INSTANCE, make_bucket(), ROLE, image=CPU_IMAGE,
                              name="ne-plain", echo=printed.append)
    assert "no autoscaling: pass --target-invocations N or --from-bench RESULT.json to register it" in printed
    assert boto("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert autoscaling.deregister(Aws(REGION), "ne-plain") == []
