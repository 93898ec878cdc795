"""The instance role: exactly PutObject on the run's results and GetObject on its staged files, plus SSM."""

from __future__ import annotations

import json

from neuron_encoder.deploy import iam
from neuron_encoder.deploy.aws import Aws, Run
from tests.moto_server import REGION, boto, policy_document

STAGED = ["neuron-encoder/ne-1/staging/wheel/neuron_encoder-0.1.0-py3-none-any.whl",
          "neuron-encoder/ne-1/staging/scripts/bench.py"]


def test_the_policy_document_names_exact_actions_and_resources():
    assert iam.instance_policy("aws", "b", "neuron-encoder/ne-1/results", STAGED + STAGED[:1]) == {
        "Version": "2012-10-17", "Statement": [
            {"Sid": "WriteResults", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::b/neuron-encoder/ne-1/results/*"},
            {"Sid": "ReadStagedFiles", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": ["arn:aws:s3:::b/neuron-encoder/ne-1/staging/scripts/bench.py",
                          "arn:aws:s3:::b/neuron-encoder/ne-1/staging/wheel/neuron_encoder-0.1.0-py3-none-any.whl"]}]}


def test_create_then_delete(aws_env):
    aws, client = Aws(REGION), boto("iam")
    run = Run("ne-1", "arn:aws:iam::123456789012:user/me", None)
    name = iam.create_instance_profile(aws, run, "b", "neuron-encoder/ne-1/results", STAGED)
    assert name == "neuron-encoder-ne-1"
    role = client.get_role(RoleName=name)["Role"]
    assert role["Path"] == "/neuron-encoder/"
    assert policy_document(role["AssumeRolePolicyDocument"])["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    assert client.list_role_policies(RoleName=name)["PolicyNames"] == ["neuron-encoder-run"]
    inline = policy_document(client.get_role_policy(RoleName=name, PolicyName="neuron-encoder-run")["PolicyDocument"])
    assert inline == iam.instance_policy("aws", "b", "neuron-encoder/ne-1/results", STAGED)
    attached = client.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    profile = client.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [name]
    assert {t["Key"]: t["Value"] for t in client.list_role_tags(RoleName=name)["Tags"]}["run-id"] == "ne-1"
    assert iam.run_roles(aws) == {"ne-1": None}

    deleted = iam.delete_instance_profile(aws, "ne-1")
    assert len(deleted) == 5
    assert client.list_roles(PathPrefix="/neuron-encoder/")["Roles"] == []
    assert client.list_instance_profiles(PathPrefix="/neuron-encoder/")["InstanceProfiles"] == []
    assert iam.delete_instance_profile(aws, "ne-1") == []  # already gone: nothing to do, no error
    assert json.dumps(iam.trust_policy())  # serialisable as sent
