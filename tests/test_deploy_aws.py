"""Calls as data: dry-run prints and sends nothing that creates; every failure a user meets is one line."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber

from neuron_encoder.deploy.aws import Aws, AwsCallError, Placeholder, Run, parse_expiry, printable
from neuron_encoder.errors import DeployError
from tests.moto_server import REGION


def stubbed(service: str, **kwargs):
    aws = Aws(REGION, **kwargs)
    stubber = Stubber(aws.client(service))
    stubber.activate()
    return aws, stubber


def test_no_region_is_one_line_saying_what_to_do(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(DeployError, match="no AWS region: pass --region or set AWS_REGION"):
        Aws()


def test_an_unknown_region_is_refused_before_any_call(aws_env):
    with pytest.raises(DeployError, match="unknown AWS region 'us-east-9': pass --region"):
        Aws("us-east-9")


def test_no_credentials_is_one_line(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DeployError, match=r"no AWS credentials: run `aws configure`") as info:
        Aws(REGION).caller_arn()
    assert "\n" not in str(info.value)


def test_rejected_credentials_say_refresh(aws_env):
    aws, stubber = stubbed("sts")
    stubber.add_client_error("get_caller_identity", "InvalidClientTokenId", "The security token is invalid.")
    with pytest.raises(DeployError, match=r"AWS rejected the credentials \(InvalidClientTokenId\): refresh them"):
        aws.caller_arn()


def test_missing_pass_role_names_the_role_and_the_permission(aws_env):
    aws, stubber = stubbed("sagemaker")
    role = "arn:aws:iam::123456789012:role/sm-exec"
    stubber.add_client_error("create_model", "AccessDeniedException",
                             f"User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iam:PassRole "
                             f"on resource: {role}")
    with pytest.raises(AwsCallError) as info:
        aws.call("sagemaker", "create_model", {"ModelName": "m", "ExecutionRoleArn": role,
                                               "PrimaryContainer": {"Image": "i"}})
    assert str(info.value) == (f"you may not pass {role} to sagemaker: add iam:PassRole on it to your IAM user or "
                               "role (README.md, 'Deploy on AWS', lists the minimal IAM policy)")


def test_access_denied_names_the_action(aws_env):
    aws, stubber = stubbed("ec2")
    stubber.add_client_error("run_instances", "UnauthorizedOperation",
                             "You are not authorized to perform this operation. Encoded authorization failure message")
    with pytest.raises(AwsCallError, match=r"not allowed to call ec2:RunInstances in us-east-1: add it to your IAM"):
        aws.call("ec2", "run_instances", {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1})


def test_a_missing_image_says_pass_ami(aws_env):
    aws, stubber = stubbed("ec2")
    stubber.add_client_error("describe_images", "InvalidAMIID.NotFound", "The image id '[ami-0bad]' does not exist")
    with pytest.raises(AwsCallError, match=r"AMI ami-0bad does not exist in us-east-1: pass --ami"):
        aws.call("ec2", "describe_images", {"ImageIds": ["ami-0bad"]}, read_only=True)


def test_dry_run_prints_the_dict_and_sends_only_read_only_calls(aws_env):
    printed = []
    aws, stubber = stubbed("ec2", dry_run=True, echo=printed.append)
    stubber.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1"}]}, {})
    assert aws.call("ec2", "describe_vpcs", {}, read_only=True)["Vpcs"][0]["VpcId"] == "vpc-1"
    params = {"GroupName": "g", "Description": "d", "VpcId": "vpc-1"}
    created = aws.call("ec2", "create_security_group", params)  # the stubber would fail on an unplanned send
    stubber.assert_no_pending_responses()
    assert isinstance(created, Placeholder) and created["GroupId"] == "<dry-run: ec2.create_security_group.GroupId>"
    assert printed[-1] == f"[dry-run] ec2.create_security_group (not sent)\n{json.dumps(params, indent=2)}"
    assert aws.planned[-1] == ("ec2", "create_security_group", params)


def test_printed_bodies_show_their_size_not_their_bytes():
    assert json.loads(printable({"Body": b"x" * 1000})) == {"Body": "<1000 bytes>"}


def test_run_tags_and_expiry():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    run = Run.new("arn:aws:iam::1:user/me", 2, now=now)
    assert run.run_id.startswith("ne-20260102-030405-")
    assert {t["Key"]: t["Value"] for t in run.tags} == {
        "tool": "neuron-encoder", "run-id": run.run_id, "owner": "arn:aws:iam::1:user/me",
        "expires-at": "2026-01-02T05:04:05+00:00"}
    assert parse_expiry("2026-01-02T05:04:05+00:00") == run.expires_at
    assert parse_expiry("soon") is None
