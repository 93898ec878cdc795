"""EC2 for a benchmark run: a closed security group, locked-down instances, AZ fallback, cleanup.

Instances take no inbound traffic (no rule, no key pair: look inside with SSM Session Manager),
answer metadata only with IMDSv2 tokens and only to the host (hop limit 1), keep their data on an
encrypted gp3 volume that dies with them, and terminate when they shut down. Every instance and
volume is tagged at creation, so cleanup finds them by tag, not by memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .. import platforms
from ..errors import DeployError
from .aws import TOOL, Aws, AwsCallError, Run, parse_expiry

# The vCPU quota a VcpuLimitExceeded hits, by the platform table's quota class (Service Quotas, service
# "ec2"). Codes are given only where checked against AWS's quota tables; the names are the console's.
_QUOTA_CODES_KNOWN = {("Standard", False): "L-1216C47A", ("G and VT", True): "L-3819A6DF", ("P", True): "L-7212CCBC"}
_QUOTA_CODES = {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
_CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported"}
# IAM is eventually consistent: EC2 may not see a new instance profile for a while after IAM's own waiter
# does, and answers run_instances with this until then (IAM user guide, "Changes that I make are not always
# immediately visible"). Retried with backoff for about two minutes.
_PROFILE_NOT_YET_VISIBLE = ("InvalidParameterValue", "Invalid IAM Instance Profile")
PROFILE_PROPAGATION_S = 120
ROOT_DEVICE = "/dev/sda1"  # Ubuntu DLAMIs; Amazon Linux 2023 uses /dev/xvda (see describe_image)


@dataclass(frozen=True)
class Launch:
    """One instance to start: what, where from, with which image, script and profile."""

    instance_type: str
    family: str
    image_id: str
    user_data: str
    security_group_id: str
    instance_profile: str
    volume_gb: int = 100
    spot: bool = False


def quota_name(instance_type: str, spot: bool) -> str:
    """inf2.xlarge -> 'Running On-Demand Inf instances'; c7i.xlarge with spot -> 'All Standard (...) Spot ...'."""
    family = platforms.family(instance_type)
    klass = family.quota_class if family else "Standard"
    label = "Standard (A, C, D, H, I, M, R, T, Z)" if klass == "Standard" else klass
    name = f"All {label} Spot Instance Requests" if spot else f"Running On-Demand {label} instances"
    code = _QUOTA_CODES_KNOWN.get((klass, spot))
    return f"{name} ({code})" if code else name


def security_group(aws: Aws, run: Run, vpc_id: str) -> str:
    """A group with no inbound rule (AWS adds the default allow-all egress: S3 and PyPI need it)."""
    response = aws.call("ec2", "create_security_group", {
        "GroupName": f"neuron-encoder-{run.run_id}", "VpcId": vpc_id,
        "Description": f"neuron-encoder run {run.run_id}: no inbound rules, egress only",
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": run.tags}]})
    return response["GroupId"]


def describe_image(aws: Aws, image_id: str) -> tuple[str, str | None]:
    """The image's root device name (the block device mapping must name it to set size and encryption) and
    its architecture (x86_64, arm64), which must be the instance's."""
    images = aws.call("ec2", "describe_images", {"ImageIds": [image_id]}, read_only=True)["Images"]
    if not images:
        raise DeployError(f"AMI {image_id} does not exist in {aws.region} (or is not shared with you): "
                          "pass --ami with an AMI of this region")
    return images[0].get("RootDeviceName") or ROOT_DEVICE, images[0].get("Architecture")


def run_params(launch: Launch, run: Run, subnet_id: str, device_name: str) -> dict[str, Any]:
    """The run_instances request: the safety settings live here, in one dict, tested field by field."""
    params: dict[str, Any] = {
        "ImageId": launch.image_id, "InstanceType": launch.instance_type, "MinCount": 1, "MaxCount": 1,
        "SubnetId": subnet_id, "SecurityGroupIds": [launch.security_group_id],
        "IamInstanceProfile": {"Name": launch.instance_profile},
        "UserData": launch.user_data,  # boto3 base64-encodes it
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": device_name, "Ebs": {
            "VolumeSize": launch.volume_gb, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": kind, "Tags": run.tags + [
            {"Key": "Name", "Value": f"neuron-encoder {run.run_id} {launch.instance_type}"}]}
            for kind in ("instance", "volume")],
    }
    if launch.spot:  # the same safety settings; a one-time request that ends with the instance
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return params


def offered_zones(aws: Aws, instance_type: str) -> list[str]:
    """Availability zones of this region that offer the type, in name order."""
    offers = aws.paginate("ec2", "describe_instance_type_offerings", {
        "LocationType": "availability-zone", "Filters": [{"Name": "instance-type", "Values": [instance_type]}]},
        "InstanceTypeOfferings")
    return sorted({offer["Location"] for offer in offers})


def candidate_subnets(aws: Aws, instance_type: str, subnets: list[str] | None) -> list[tuple[str, str]]:
    """[(subnet id, zone)] to try in order: the given subnets, else the default VPC's, in zones offering the type."""
    zones = offered_zones(aws, instance_type)
    if subnets:
        found = aws.call("ec2", "describe_subnets", {"SubnetIds": subnets}, read_only=True)["Subnets"]
        by_id = {s["SubnetId"]: s["AvailabilityZone"] for s in found}
        return [(s, by_id[s]) for s in subnets if by_id.get(s) in zones]
    found = aws.call("ec2", "describe_subnets", {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]},
                     read_only=True)["Subnets"]
    by_zone = {s["AvailabilityZone"]: s["SubnetId"] for s in found}
    return [(by_zone[zone], zone) for zone in zones if zone in by_zone]


def vpc_of(aws: Aws, subnets: list[str] | None) -> str:
    """The VPC the security group goes in: the given subnets', else the default VPC."""
    if subnets:
        found = aws.call("ec2", "describe_subnets", {"SubnetIds": subnets}, read_only=True)["Subnets"]
        vpcs = {s["VpcId"] for s in found}
        if len(vpcs) != 1:
            raise DeployError(f"--subnet {','.join(subnets)}: subnets must be in one VPC, "
                              f"found {sorted(vpcs) or 'none'}")
        return vpcs.pop()
    vpcs = aws.call("ec2", "describe_vpcs", {"Filters": [{"Name": "is-default", "Values": ["true"]}]},
                    read_only=True)["Vpcs"]
    if not vpcs:
        raise DeployError(f"no default VPC in {aws.region}: pass --subnet with subnets (with a route to S3 and "
                          "PyPI) for the instances")
    return vpcs[0]["VpcId"]


def run_instance(aws: Aws, params: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """run_instances, retried with backoff (2, 4, 8, ... 30 s; about two minutes in all) while EC2 does not
    yet see a just-created instance profile."""
    delay, waited = 2.0, 0.0
    while True:
        try:
            return aws.call("ec2", "run_instances", params)
        except AwsCallError as exc:
            code, text = _PROFILE_NOT_YET_VISIBLE
            if exc.code != code or text not in str(exc):
                raise
            if waited >= PROFILE_PROPAGATION_S:
                raise DeployError(f"EC2 still does not see instance profile {params['IamInstanceProfile']['Name']} "
                                  f"after {waited:.0f} s ({exc}): retry in a few minutes, or pass "
                                  "--instance-profile with one that exists") from None
        sleep(delay)
        waited += delay
        delay = min(2 * delay, 30.0)


def launch_instance(aws: Aws, launch: Launch, run: Run, subnets: list[tuple[str, str]],
                    device_name: str, echo: Callable[[str], None] = print,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Start one instance, trying the next zone on a capacity error; a quota error stops at once."""
    if not subnets:
        raise DeployError(f"no subnet in a zone offering {launch.instance_type} in {aws.region}: pick another "
                          "region or pass --subnet in a zone that offers it")
    tried = []
    for subnet_id, zone in subnets:
        try:
            response = run_instance(aws, run_params(launch, run, subnet_id, device_name), sleep)
        except AwsCallError as exc:
            if exc.code in _QUOTA_CODES:
                quota = quota_name(launch.instance_type, launch.spot)
                raise DeployError(f"vCPU quota too low for {launch.instance_type} in {aws.region} ({exc.code}): "
                                  f"raise '{quota}' in Service Quotas (EC2) for {aws.region}, then retry") from None
            if exc.code not in _CAPACITY_CODES:
                raise
            tried.append(zone)
            echo(f"{launch.instance_type}: no capacity in {zone} ({exc.code}); trying the next zone")
            continue
        instance = response["Instances"][0]
        echo(f"{launch.instance_type}: would start in {zone} (dry run)" if aws.dry_run else
             f"{launch.instance_type}: {instance['InstanceId']} starting in {zone}")
        return instance
    raise DeployError(f"no {launch.instance_type} capacity in {', '.join(tried)} right now: retry later, "
                      "try --spot or another region")


LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


def instances_of(aws: Aws, run_id: str | None = None, live_only: bool = True) -> list[dict[str, Any]]:
    """Every instance this tool tagged (of one run, or all); live_only leaves out terminated ones."""
    filters = [{"Name": "tag:tool", "Values": [TOOL]}]
    if live_only:
        filters.append({"Name": "instance-state-name", "Values": LIVE_STATES})
    if run_id:
        filters.append({"Name": "tag:run-id", "Values": [run_id]})
    reservations = aws.paginate("ec2", "describe_instances", {"Filters": filters}, "Reservations")
    return [instance for reservation in reservations for instance in reservation["Instances"]]


def tag(resource: dict[str, Any], key: str) -> str | None:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}.get(key)


def is_expired(resource: dict[str, Any], now: datetime | None = None) -> bool:
    expires = parse_expiry(tag(resource, "expires-at") or "")
    return expires is not None and expires <= (now or datetime.now(timezone.utc))


def terminate(aws: Aws, instance_ids: list[str]) -> None:
    """Terminate and wait until they are gone (their security group cannot be deleted before)."""
    if not instance_ids:
        return
    aws.call("ec2", "terminate_instances", {"InstanceIds": instance_ids})
    aws.wait("ec2", "instance_terminated", {"InstanceIds": instance_ids}, delay=10, max_attempts=60)


def security_groups_of(aws: Aws, run_id: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "tag:tool", "Values": [TOOL]}]
    if run_id:
        filters.append({"Name": "tag:run-id", "Values": [run_id]})
    return aws.paginate("ec2", "describe_security_groups", {"Filters": filters}, "SecurityGroups")


def delete_security_group(aws: Aws, group_id: str) -> None:
    aws.call("ec2", "delete_security_group", {"GroupId": group_id})
