"""moto in server mode on loopback, for the deploy tests: real boto3 clients over HTTP, as a user's code.

Import the fixtures into a test module (`from tests.moto_server import aws_env, moto_endpoint`).
One server per test session; every test starts from an empty account (moto's backends reset) with fake
credentials and AWS_ENDPOINT_URL pointing at the server, so nothing can reach real AWS.

Where moto differs from AWS, the tests work around it, as README.md's "Deploy on AWS" says:
- SSM: moto has no Neuron or Deep Learning AMI public parameters and refuses writes under /aws/
  (moto/ssm/models.py put_parameter), so tests put their AMI ids under /neuron-encoder-test/ and
  point the fleet's ami_parameters there.
- EC2: moto's register_image drops Architecture; register_image sets it on moto's record.
- SageMaker: moto's endpoint config accepts only an old fixed list of instance types, without
  ml.inf2 (moto/sagemaker/models.py validate_instance_type), so the endpoint tests use ml.inf1.xlarge,
  and moto's endpoints are InService at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REGION = "us-east-1"
TEST_PARAMETER_PREFIX = "/neuron-encoder-test"


@pytest.fixture(scope="session")
def moto_endpoint():
    import logging
    import os
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    # AmazonSSMManagedInstanceCore must exist to be attached; moto loads AWS's managed policies on request.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"  # seconds per test otherwise; tests register their own
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# Reset service by service: moto's /moto-api/reset also rebuilds IAM, and loading AWS's managed policies
# again costs over a second per test; IAM is emptied through its API instead (empty_iam).
_RESET = ("ec2", "s3", "ssm", "sts", "sagemaker", "sagemaker-runtime", "applicationautoscaling")


def _reset_services() -> None:
    from moto.backends import get_backend
    for name in _RESET:
        backend = get_backend(name)
        for account_backend in backend.values():
            account_backend.reset()
        backend.clear()


def empty_iam() -> None:
    """Delete every role and instance profile, the way a user would have to."""
    client = boto("iam")
    for profile in client.list_instance_profiles()["InstanceProfiles"]:
        for role in profile["Roles"]:
            client.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"],
                                                     RoleName=role["RoleName"])
        client.delete_instance_profile(InstanceProfileName=profile["InstanceProfileName"])
    for role in client.list_roles()["Roles"]:
        name = role["RoleName"]
        for policy in client.list_role_policies(RoleName=name)["PolicyNames"]:
            client.delete_role_policy(RoleName=name, PolicyName=policy)
        for policy in client.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            client.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        client.delete_role(RoleName=name)


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """A fresh, empty moto account and the environment a user would have, pointed at it."""
    _reset_services()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_ENDPOINT_URL": moto_endpoint, "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    empty_iam()
    return env


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    """One wheel of this checkout per session: building takes seconds; test_deploy_staging checks it."""
    from neuron_encoder.deploy.staging import build_wheel, checkout_root
    return build_wheel(checkout_root(), tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_config):
    """A CPU artifact of the tiny random encoder (no tokenizer): what the SageMaker tests package."""
    import torch
    from neuron_encoder import Encoder
    from neuron_encoder.compiler import compile_model
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("artifacts") / "tiny-cpu"
    compile_model(Encoder(tiny_config).eval(), batch_sizes="1", seq_lens="16", backend="cpu", out=out,
                  progress=lambda line: None)
    return out


def boto(service: str, region: str = REGION):
    """A plain boto3 client, for a test to look at what the code under test created."""
    import boto3
    return boto3.client(service, region_name=region)


def register_test_images(families=("neuron", "gpu", "cpu", "cpu-arm64"), region: str = REGION) -> dict[str, str]:
    """An AMI per family in moto, published under the test prefix: {family: SSM parameter path}."""
    ssm = boto("ssm", region)
    parameters = {}
    for family in families:
        image = register_image(f"test-{family}-image", "arm64" if family.endswith("-arm64") else "x86_64", region)
        name = f"{TEST_PARAMETER_PREFIX}/{family}/latest/image_id"
        ssm.put_parameter(Name=name, Value=image, Type="String")
        parameters[family] = name
    return parameters


def register_image(name: str, architecture: str, region: str = REGION) -> str:
    """An AMI whose describe_images says `architecture` (x86_64 or arm64). moto's register_image drops the
    Architecture it is given (moto/ec2/models/amis.py), so it is set on moto's own record: the server runs
    in this process."""
    from moto.backends import get_backend
    image = boto("ec2", region).register_image(Name=name, RootDeviceName="/dev/sda1", Architecture=architecture,
                                               VirtualizationType="hvm")["ImageId"]
    for account_backend in get_backend("ec2").values():
        if image in account_backend[region].amis:
            account_backend[region].amis[image].architecture = architecture
    return image


def make_bucket(name: str = "ne-test-bucket", region: str = REGION) -> str:
    s3 = boto("s3", region)
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def queue_invocation_result(moto_endpoint: str, body: str) -> None:
    """moto's sagemaker-runtime answers from a queue it is given (moto/sagemakerruntime/models.py)."""
    import urllib.request
    queued = {"results": [{"Body": body, "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic",
                           "CustomAttributes": ""}], "region": REGION}
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/static/sagemaker/endpoint-results",
                                     data=json.dumps(queued).encode(), method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def policy_document(value) -> dict:
    """IAM returns policy documents URL-decoded dicts through boto3, or JSON text through some paths."""
    return json.loads(value) if isinstance(value, str) else value


FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "results"
