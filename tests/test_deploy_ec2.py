"""The instance request's safety settings, AZ fallback on capacity errors, and quota errors that stop at once."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from neuron_encoder.deploy import ec2
from neuron_encoder.deploy.aws import Aws, Run
from neuron_encoder.errors import DeployError
from tests.moto_server import REGION

RUN = Run("ne-1", "arn:aws:iam::123456789012:user/me", None)


def launch(**changes) -> ec2.Launch:
    fields = dict(instance_type="inf2.xlarge", family="neuron", image_id="ami-1", user_data="#!/bin/bash\n",
                  security_group_id="sg-1", instance_profile="neuron-encoder-ne-1")
    fields.update(changes)
    return ec2.Launch(**fields)


def test_run_params_carry_every_safety_setting():
    params = ec2.run_params(launch(), RUN, "subnet-1", "/dev/sda1")
    assert params["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                         "HttpEndpoint": "enabled"}
    assert params["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert params["BlockDeviceMappings"] == [{"DeviceName": "/dev/sda1", "Ebs": {
        "VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}]
    assert "KeyName" not in params and "InstanceMarketOptions" not in params
    assert [spec["ResourceType"] for spec in params["TagSpecifications"]] == ["instance", "volume"]
    spot = ec2.run_params(launch(spot=True), RUN, "subnet-1", "/dev/sda1")
    assert spot["InstanceMarketOptions"]["SpotOptions"] == {"SpotInstanceType": "one-time",
                                                            "InstanceInterruptionBehavior": "terminate"}
    assert spot["MetadataOptions"] == params["MetadataOptions"]


@pytest.mark.parametrize("instance_type, spot, name", [
    ("inf2.xlarge", False, "Running On-Demand Inf instances"),
    ("trn1.2xlarge", True, "All Trn Spot Instance Requests"),
    ("g5.xlarge", True, "All G and VT Spot Instance Requests (L-3819A6DF)"),
    ("c7i.xlarge", False, "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances (L-1216C47A)")])
def test_quota_names(instance_type, spot, name):
    assert ec2.quota_name(instance_type, spot) == name


def stubbed_zones(stubber: Stubber, zones: list[str]) -> None:
    stubber.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "inf2.xlarge", "LocationType": "availability-zone", "Location": z} for z in zones]},
        {"LocationType": "availability-zone", "Filters": [{"Name": "instance-type", "Values": ["inf2.xlarge"]}]})
    stubber.add_response("describe_subnets", {"Subnets": [
        {"SubnetId": f"subnet-{z[-1]}", "AvailabilityZone": z} for z in zones + ["us-east-1f"]]},
        {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]})


def test_capacity_errors_try_the_next_zone_that_offers_the_type(aws_env):
    aws, printed = Aws(REGION), []
    with Stubber(aws.client("ec2")) as stubber:
        stubbed_zones(stubber, ["us-east-1c", "us-east-1a"])
        subnets = ec2.candidate_subnets(aws, "inf2.xlarge", None)
        assert subnets == [("subnet-a", "us-east-1a"), ("subnet-c", "us-east-1c")]  # not 1f: no offering there
        stubber.add_client_error("run_instances", "InsufficientInstanceCapacity",
                                 "We currently do not have sufficient inf2.xlarge capacity in us-east-1a.",
                                 expected_params={**ec2.run_params(launch(), RUN, "subnet-a", "/dev/sda1")})
        stubber.add_response("run_instances", {"Instances": [{"InstanceId": "i-1"}]},
                             {**ec2.run_params(launch(), RUN, "subnet-c", "/dev/sda1")})
        instance = ec2.launch_instance(aws, launch(), RUN, subnets, "/dev/sda1", printed.append)
        stubber.assert_no_pending_responses()
    assert instance["InstanceId"] == "i-1"
    assert printed == ["inf2.xlarge: no capacity in us-east-1a (InsufficientInstanceCapacity); trying the next zone",
                       "inf2.xlarge: i-1 starting in us-east-1c"]


def test_no_capacity_anywhere_says_what_to_try(aws_env):
    aws = Aws(REGION)
    with Stubber(aws.client("ec2")) as stubber:
        for _ in range(2):
            stubber.add_client_error("run_instances", "InsufficientInstanceCapacity", "none")
        with pytest.raises(DeployError, match=r"no inf2.xlarge capacity in us-east-1a, us-east-1b right now: retry "
                                              "later, try --spot or another region"):
            ec2.launch_instance(aws, launch(), RUN, [("subnet-a", "us-east-1a"), ("subnet-b", "us-east-1b")],
                                "/dev/sda1", lambda line: None)


def test_a_quota_error_stops_at_once_and_names_the_quota(aws_env):
    aws = Aws(REGION)
    with Stubber(aws.client("ec2")) as stubber:
        stubber.add_client_error("run_instances", "VcpuLimitExceeded",
                                 "You have requested more vCPU capacity than your current vCPU limit of 0 allows")
        with pytest.raises(DeployError) as info:  # a second zone would be the same quota: no retry
            ec2.launch_instance(aws, launch(), RUN, [("subnet-a", "us-east-1a"), ("subnet-b", "us-east-1b")],
                                "/dev/sda1", lambda line: None)
        stubber.assert_no_pending_responses()
    assert str(info.value) == ("vCPU quota too low for inf2.xlarge in us-east-1 (VcpuLimitExceeded): raise "
                               "'Running On-Demand Inf instances' in Service Quotas (EC2) for us-east-1, then retry")


def test_no_zone_offering_the_type_is_an_error_before_any_launch(aws_env):
    with pytest.raises(DeployError, match="no subnet in a zone offering inf2.xlarge"):
        ec2.launch_instance(Aws(REGION), launch(), RUN, [], "/dev/sda1")


PROFILE_NOT_YET = ("Value (neuron-encoder-ne-1) for parameter iamInstanceProfile.name is invalid. "
                   "Invalid IAM Instance Profile name")


def test_a_new_instance_profile_ec2_does_not_see_yet_is_retried_with_backoff(aws_env):
    """IAM's eventual consistency: run_instances right after create_instance_profile fails until EC2 sees it
    (issue 20, item 2); the launch waits and retries instead of failing the first fleet run."""
    aws, slept = Aws(REGION), []
    params = ec2.run_params(launch(), RUN, "subnet-a", "/dev/sda1")
    with Stubber(aws.client("ec2")) as stubber:
        for _ in range(3):
            stubber.add_client_error("run_instances", "InvalidParameterValue", PROFILE_NOT_YET, expected_params=params)
        stubber.add_response("run_instances", {"Instances": [{"InstanceId": "i-1"}]}, params)
        instance = ec2.launch_instance(aws, launch(), RUN, [("subnet-a", "us-east-1a")], "/dev/sda1",
                                       lambda line: None, sleep=slept.append)
        stubber.assert_no_pending_responses()
    assert instance["InstanceId"] == "i-1" and slept == [2.0, 4.0, 8.0]


def test_an_instance_profile_still_unseen_after_two_minutes_is_an_error_that_says_so(aws_env):
    aws, slept = Aws(REGION), []
    with Stubber(aws.client("ec2")) as stubber:
        for _ in range(8):
            stubber.add_client_error("run_instances", "InvalidParameterValue", PROFILE_NOT_YET)
        with pytest.raises(DeployError, match="EC2 still does not see instance profile neuron-encoder-ne-1 after "
                                              "120 s .*--instance-profile"):
            ec2.launch_instance(aws, launch(), RUN, [("subnet-a", "us-east-1a")], "/dev/sda1", lambda line: None,
                                sleep=slept.append)
        stubber.assert_no_pending_responses()
    assert slept == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]  # eight tries over two minutes


def test_other_invalid_parameters_are_not_retried(aws_env):
    aws, slept = Aws(REGION), []
    with Stubber(aws.client("ec2")) as stubber:
        stubber.add_client_error("run_instances", "InvalidParameterValue", "Invalid value for volume size")
        with pytest.raises(DeployError, match="Invalid value for volume size"):
            ec2.launch_instance(aws, launch(), RUN, [("subnet-a", "us-east-1a")], "/dev/sda1", lambda line: None,
                                sleep=slept.append)
    assert slept == []
