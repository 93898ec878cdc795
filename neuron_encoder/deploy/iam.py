"""The benchmark instances' role: read the staged files, write the run's results, nothing else.

The instance needs S3 for its inputs and outputs and SSM Session Manager for a look inside
(no key pair, no open port). Each run gets its own role, named after the run, so its policy can
name the run's exact objects and cleanup can delete it without guessing.
"""

from __future__ import annotations

import json
from typing import Iterable

from .aws import Aws, Run

ROLE_PATH = "/neuron-encoder/"
POLICY_NAME = "neuron-encoder-run"
SSM_POLICY = "AmazonSSMManagedInstanceCore"  # AWS managed: what Session Manager needs on an instance


def role_name(run_id: str) -> str:
    return f"neuron-encoder-{run_id}"


def trust_policy() -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def instance_policy(partition: str, bucket: str, results_prefix: str, staged_keys: Iterable[str]) -> dict:
    """PutObject under the run's results prefix; GetObject on exactly the files staged for it."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WriteResults", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"arn:{partition}:s3:::{bucket}/{results_prefix.rstrip('/')}/*"},
        {"Sid": "ReadStagedFiles", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": sorted({f"arn:{partition}:s3:::{bucket}/{key}" for key in staged_keys})},
    ]}


def create_instance_profile(aws: Aws, run: Run, bucket: str, results_prefix: str,
                            staged_keys: Iterable[str]) -> str:
    """Role + inline policy + SSM managed policy + instance profile; returns the profile name."""
    name = role_name(run.run_id)
    aws.call("iam", "create_role", {
        "RoleName": name, "Path": ROLE_PATH, "AssumeRolePolicyDocument": json.dumps(trust_policy()),
        "Description": f"neuron-encoder benchmark run {run.run_id}; delete with deploy cleanup", "Tags": run.tags})
    aws.call("iam", "put_role_policy", {
        "RoleName": name, "PolicyName": POLICY_NAME,
        "PolicyDocument": json.dumps(instance_policy(aws.partition, bucket, results_prefix, staged_keys))})
    aws.call("iam", "attach_role_policy", {"RoleName": name,
                                           "PolicyArn": f"arn:{aws.partition}:iam::aws:policy/{SSM_POLICY}"})
    aws.call("iam", "create_instance_profile", {"InstanceProfileName": name, "Path": ROLE_PATH, "Tags": run.tags})
    aws.call("iam", "add_role_to_instance_profile", {"InstanceProfileName": name, "RoleName": name})
    aws.wait("iam", "instance_profile_exists", {"InstanceProfileName": name}, delay=2, max_attempts=15)
    return name


def delete_instance_profile(aws: Aws, run_id: str) -> list[str]:
    """Undo create_instance_profile in reverse; what is already gone is skipped. Returns what it deleted."""
    name = role_name(run_id)
    steps = [
        ("remove_role_from_instance_profile", {"InstanceProfileName": name, "RoleName": name}),
        ("delete_instance_profile", {"InstanceProfileName": name}),
        ("delete_role_policy", {"RoleName": name, "PolicyName": POLICY_NAME}),
        ("detach_role_policy", {"RoleName": name, "PolicyArn": f"arn:{aws.partition}:iam::aws:policy/{SSM_POLICY}"}),
        ("delete_role", {"RoleName": name}),
    ]
    return aws.delete_each("iam", steps, {"NoSuchEntity"}, name)


def run_roles(aws: Aws) -> dict[str, str | None]:
    """{run id: its expires-at tag} for every role this tool created (all live under ROLE_PATH)."""
    prefix = role_name("")
    runs = {}
    for role in aws.paginate("iam", "list_roles", {"PathPrefix": ROLE_PATH}, "Roles"):
        if role["RoleName"].startswith(prefix):
            tags = aws.call("iam", "list_role_tags", {"RoleName": role["RoleName"]}, read_only=True)["Tags"]
            runs[role["RoleName"][len(prefix):]] = {t["Key"]: t["Value"] for t in tags}.get("expires-at")
    return runs
