"""`neuron-encoder deploy ...` end to end against moto: exit codes, one-line errors, dry-run, and the `aws` CLI
reading back what the commands created, as a user would."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.moto_server import (FIXTURE_RESULTS, REGION, boto, make_bucket, queue_invocation_result, register_image,
                               register_test_images)
from tests.test_cli import run_cli  # `neuron-encoder ARGS` in-process, exit codes through cli.main

AWS_CLI = Path(sys.executable).with_name("aws")
SPEC = "neuron-encoder[bench]==0.1.0"


@pytest.fixture
def account(aws_env):
    parameters = register_test_images()
    ssm = boto("ssm")
    images = {family: ssm.get_parameter(Name=name)["Parameter"]["Value"] for family, name in parameters.items()}
    return {"bucket": make_bucket(), "ami": ",".join(f"{family}={image}" for family, image in images.items())}


def bench_args(account, *extra: str) -> list[str]:
    return ["deploy", "bench", "--instance-types", "inf2.xlarge,c7i.xlarge", "--bucket", account["bucket"],
            "--ami", account["ami"], "--package", SPEC, "--max-hours", "1", *extra]


def run_id_in(out: str) -> str:
    return next(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("run ne-"))


def aws_cli(*args: str) -> dict:
    completed = subprocess.run([str(AWS_CLI), *args, "--endpoint-url", os.environ["AWS_ENDPOINT_URL"],
                                "--region", REGION, "--output", "json"],
                               capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout or "{}")


def test_dry_run_prints_the_calls_and_creates_nothing(monkeypatch, capsys, account):
    code, out, err = run_cli(monkeypatch, capsys, *bench_args(account, "--dry-run"))
    assert code == 0, err
    assert out.count("[dry-run] ec2.run_instances (not sent)") == 2
    assert '"HttpTokens": "required"' in out and '"InstanceInitiatedShutdownBehavior": "terminate"' in out
    assert "[dry-run] iam.create_role (not sent)" in out and "[dry-run] s3.put_object (not sent)" in out
    assert boto("iam").list_roles()["Roles"] == []
    assert [r for r in boto("ec2").describe_instances()["Reservations"]] == []
    assert "Contents" not in boto("s3").list_objects_v2(Bucket=account["bucket"])


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the aws CLI (awscli, a test dependency) is not installed")
def test_bench_status_cleanup_and_the_aws_cli_sees_the_same(monkeypatch, capsys, account):
    code, out, err = run_cli(monkeypatch, capsys, *bench_args(account))
    assert code == 0, err
    run = run_id_in(out)
    assert f"neuron-encoder deploy cleanup {run} --region {REGION}" in out

    reservations = aws_cli("ec2", "describe-instances", "--filters", f"Name=tag:run-id,Values={run}")["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert sorted(i["InstanceType"] for i in instances) == ["c7i.xlarge", "inf2.xlarge"]
    assert {i["MetadataOptions"]["HttpTokens"] for i in instances} == {"required"}
    groups = aws_cli("ec2", "describe-security-groups", "--filters", f"Name=tag:run-id,Values={run}")
    assert [g["IpPermissions"] for g in groups["SecurityGroups"]] == [[]]
    for instance in instances:  # issue 20, item 7: installs under the image's own package list, then pip check
        user_data = base64.b64decode(aws_cli("ec2", "describe-instance-attribute", "--instance-id",
                                              instance["InstanceId"], "--attribute", "userData")["UserData"]["Value"])
        lines = user_data.decode().splitlines()
        frozen = next(i for i, line in enumerate(lines) if "-m pip list --format=freeze" in line)
        install = next(i for i, line in enumerate(lines) if '-m pip install -q -c "$WORK/frozen.txt"' in line)
        check = next(i for i, line in enumerate(lines) if line.startswith('"$PY" -m pip check'))
        assert frozen < install < check and lines[frozen].endswith('> "$WORK/frozen.txt"')
    policy = aws_cli("iam", "get-role-policy", "--role-name", f"neuron-encoder-{run}", "--policy-name",
                     "neuron-encoder-run")["PolicyDocument"]
    assert [s["Action"] for s in policy["Statement"]] == ["s3:PutObject", "s3:GetObject"]
    staged = aws_cli("s3api", "list-objects-v2", "--bucket", account["bucket"], "--prefix", f"neuron-encoder/{run}/")
    assert {o["Key"].rsplit("/", 1)[-1] for o in staged["Contents"]} == {"bench.py", "01-fleet-neuron.json",
                                                                          "02-fleet-cpu.json"}

    code, out, _ = run_cli(monkeypatch, capsys, "deploy", "status", run)
    assert code == 0 and out.count("running") == 2
    code, out, _ = run_cli(monkeypatch, capsys, "deploy", "cleanup", run)
    assert code == 0 and out.count("terminated i-") == 2 and "delete_role" in out
    live = aws_cli("ec2", "describe-instances", "--filters", f"Name=tag:run-id,Values={run}",
                   "Name=instance-state-name,Values=pending,running,stopping,stopped")["Reservations"]
    assert live == []


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the aws CLI (awscli, a test dependency) is not installed")
def test_endpoint_invoke_and_delete_through_the_cli(monkeypatch, capsys, aws_env, moto_endpoint, tiny_artifact):
    artifact = tiny_artifact
    bucket = make_bucket()
    code, out, err = run_cli(monkeypatch, capsys, "deploy", "endpoint", "--artifact", str(artifact),
                             "--instance-type", "ml.m5.large", "--bucket", bucket,
                             "--role", "arn:aws:iam::123456789012:role/sm", "--name", "ne-cli",
                             "--image", "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.13.0-cpu",
                             "--from-bench", str(FIXTURE_RESULTS / "inf2-xlarge-neuron.json"), "--max", "2")
    assert code == 0, err
    assert "scaling target: neuron best throughput within p99 10 ms 2618 inferences/s x 60 s" in out
    assert aws_cli("sagemaker", "describe-endpoint", "--endpoint-name", "ne-cli")["EndpointStatus"] == "InService"
    # TorchServe's response timeout is 60 s unless the container environment says otherwise (issue 20, item 3)
    model = aws_cli("sagemaker", "describe-model", "--model-name", "ne-cli")
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "600"
    policies = boto("application-autoscaling").describe_scaling_policies(ServiceNamespace="sagemaker")
    assert policies["ScalingPolicies"][0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 78540.0
    queue_invocation_result(moto_endpoint, "[[0.6, 0.8]]")  # moto answers from a queue; the request is ours
    code, out, _ = run_cli(monkeypatch, capsys, "deploy", "invoke", "ne-cli", "hello")
    assert code == 0 and json.loads(out) == [[0.6, 0.8]]
    code, out, _ = run_cli(monkeypatch, capsys, "deploy", "delete", "ne-cli")
    assert code == 0 and "sagemaker delete_endpoint ne-cli" in out
    assert boto("sagemaker").list_endpoints()["Endpoints"] == []


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the aws CLI (awscli, a test dependency) is not installed")
def test_a_graviton_type_gets_an_arm64_image_or_a_refusal_saying_why(monkeypatch, capsys, account):
    """Issue 20, item 5: `deploy bench --instance-types c7g.xlarge --dry-run` names an arm64 image (the aws CLI
    reads its architecture back); an arm64 type with no arm64 image, or an x86_64 --ami for it, exits 2."""
    args = ["deploy", "bench", "--bucket", account["bucket"], "--package", SPEC, "--dry-run", "--ami", account["ami"]]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--instance-types", "c7g.xlarge")
    assert code == 0, err
    sent = json.loads(out.split("[dry-run] ec2.run_instances (not sent)\n", 1)[1].split("\n[dry-run]", 1)[0]
                      .split("\nc7g.xlarge:", 1)[0])
    assert sent["InstanceType"] == "c7g.xlarge"
    image = aws_cli("ec2", "describe-images", "--image-ids", sent["ImageId"])["Images"][0]
    assert image["Architecture"] == "arm64"
    code, _, err = run_cli(monkeypatch, capsys, *args, "--instance-types", "g5g.xlarge")
    assert code == 2 and "g5g.xlarge is an arm64 (Graviton) type, and no arm64 gpu image is known here" in err
    x86 = register_image("an-x86-image", "x86_64")
    code, _, err = run_cli(monkeypatch, capsys, *args[:-2], "--ami", f"cpu-arm64={x86}", "--instance-types",
                           "c7g.xlarge")
    assert code == 2 and f"AMI {x86} is x86_64, and the cpu-arm64 image must be arm64" in err


def test_errors_are_one_line_with_the_deploy_exit_code(monkeypatch, capsys, aws_env):
    make_bucket("ne-eu-bucket", "eu-west-1")
    code, out, err = run_cli(monkeypatch, capsys, "deploy", "bench", "--instance-types", "c7i.xlarge",
                             "--bucket", "ne-eu-bucket", "--package", SPEC)
    assert code == 9
    assert err.strip().splitlines()[-1] == ("error: bucket ne-eu-bucket is in eu-west-1, not us-east-1: pass "
                                            "--region eu-west-1, or a bucket in us-east-1")
    code, _, err = run_cli(monkeypatch, capsys, "deploy", "cleanup")
    assert code == 2 and "give a RUN id to clean up, or --expired" in err
    code, _, err = run_cli(monkeypatch, capsys, "deploy", "status", "ne-x", "--region", "mars-1")
    assert code == 9 and "unknown AWS region 'mars-1'" in err


def run_script(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """deploy/deploy.py as `python deploy/deploy.py ARGS` runs it, in this process (its own main())."""
    import runpy
    script = Path(__file__).resolve().parents[1] / "deploy" / "deploy.py"
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    try:
        runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_deploy_script_is_a_thin_wrapper(monkeypatch, capsys, account, tmp_path):
    config = tmp_path / "fleet.json"
    config.write_text(json.dumps({"instance_types": ["c7i.xlarge"], "package": SPEC,
                                  "amis": dict(pair.split("=") for pair in account["ami"].split(","))}))
    code, out, err = run_script(monkeypatch, capsys, str(config), "--bucket", account["bucket"], "--dry-run")
    assert code == 0, err
    assert "[dry-run] ec2.run_instances (not sent)" in out and "run: ne-" in out
    assert boto("iam").list_roles()["Roles"] == []
    code, _, err = run_script(monkeypatch, capsys, str(tmp_path / "nope.json"))
    assert code == 2 and "no such fleet config" in err


def iam_actions(service: str, operation: str, params: dict) -> set[str]:
    """The IAM actions one API call needs, including tag-on-create and passing a role."""
    s3 = {"head_bucket": "s3:ListBucket", "list_objects_v2": "s3:ListBucket", "put_object": "s3:PutObject",
          "get_object": "s3:GetObject"}
    prefix = {"sagemaker-runtime": "sagemaker"}.get(service, service)
    actions = {s3[operation] if service == "s3" else
               f"{prefix}:{''.join(part.capitalize() for part in operation.split('_'))}"}
    if params.get("Tagging"):
        actions.add("s3:PutObjectTagging")
    if params.get("TagSpecifications"):
        actions.add("ec2:CreateTags")
    if params.get("Tags"):
        actions.add({"iam": "iam:TagRole" if operation == "create_role" else "iam:TagInstanceProfile",
                     "sagemaker": "sagemaker:AddTags"}.get(service, f"{service}:TagResource"))
    if params.get("IamInstanceProfile") or params.get("ExecutionRoleArn"):
        actions.add("iam:PassRole")
    return actions


def readme_policy_actions() -> list[str]:
    import re
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    policy = json.loads(re.search(r"\*\*Permissions\*\*.*?```json\n(.*?)```", readme, re.S).group(1))
    actions = []
    for statement in policy["Statement"]:
        actions += [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
    return actions


def test_the_readme_policy_allows_every_call_the_commands_make(account, tiny_artifact):
    """Dry runs record every call (read-only ones too); each must be allowed by README.md's minimal policy."""
    from fnmatch import fnmatch
    from neuron_encoder.deploy import fleet, sagemaker
    from neuron_encoder.deploy.aws import Aws
    artifact = tiny_artifact
    aws = Aws(REGION, dry_run=True, echo=lambda line: None)
    config = fleet.load_fleet_config(None, instance_types="inf2.xlarge,c7i.xlarge", bucket=account["bucket"],
                                     package=SPEC, amis=dict(pair.split("=") for pair in account["ami"].split(",")))
    fleet.launch_fleet(config, aws, echo=lambda line: None)
    fleet.status(aws, "ne-x")
    fleet.cleanup(aws, expired=True, echo=lambda line: None)
    sagemaker.deploy_endpoint(aws, artifact, "ml.m5.large", account["bucket"], "arn:aws:iam::1:role/sm",
                              image="i:latest", scaling=sagemaker.Scaling(1, 2, 60.0), echo=lambda line: None)
    sagemaker.delete_all(aws, "ne-x", echo=lambda line: None)
    needed = set().union(*(iam_actions(*call) for call in aws.planned)) | {
        "sagemaker:InvokeEndpoint", "s3:GetObject", "iam:ListRoleTags", "iam:DeleteRole"}  # invoke, collect, cleanup
    allowed = readme_policy_actions()
    missing = sorted(a for a in needed if not any(fnmatch(a, pattern) for pattern in allowed))
    assert missing == [] and len(needed) > 30
    assert boto("iam").list_roles()["Roles"] == [] and boto("sagemaker").list_models()["Models"] == []
