"""AMIs from SSM public parameters: configurable paths, and a missing one says which and what to do."""

from __future__ import annotations

import pytest

from neuron_encoder.deploy.amis import (FAMILIES, check_architecture, family_of, image_of, parse_ami_overrides,
                                        resolve_ami)
from neuron_encoder.deploy.aws import Aws
from neuron_encoder.errors import ConfigError, DeployError
from tests.moto_server import REGION, boto


@pytest.mark.parametrize("instance_type, family", [("inf2.xlarge", "neuron"), ("trn1.2xlarge", "neuron"),
                                                   ("trn1n.32xlarge", "neuron"), ("g5.xlarge", "gpu"),
                                                   ("p4d.24xlarge", "gpu"), ("c7i.xlarge", "cpu"),
                                                   ("m5.large", "cpu")])
def test_family_of(instance_type, family):
    assert family_of(instance_type) == family


@pytest.mark.parametrize("instance_type, image", [("c7g.xlarge", "cpu-arm64"), ("m7gd.large", "cpu-arm64"),
                                                  ("c7i.xlarge", "cpu"), ("inf2.xlarge", "neuron"),
                                                  ("g5.xlarge", "gpu")])
def test_graviton_types_get_the_arm64_image(instance_type, image):
    """Issue 20, item 5: c7g and other arm64 types boot arm64 images, never the x86_64 ones."""
    assert image_of(instance_type) == image
    assert FAMILIES[image].arch == ("arm64" if "arm64" in image else "x86_64")


def test_an_arm64_type_without_an_arm64_image_is_refused_saying_why():
    with pytest.raises(ConfigError, match="g5g.xlarge is an arm64 \\(Graviton\\) type, and no arm64 gpu image is "
                                          "known here.*pick an x86_64 type, such as g5.xlarge"):
        image_of("g5g.xlarge")


def test_an_image_of_the_other_architecture_is_refused():
    check_architecture("ami-1", "arm64", "cpu-arm64")
    check_architecture("ami-1", None, "cpu-arm64")  # an image that does not say is not refused
    with pytest.raises(ConfigError, match="AMI ami-1 is x86_64, and the cpu-arm64 image must be arm64: pass --ami "
                                          "cpu-arm64=ami-"):
        check_architecture("ami-1", "x86_64", "cpu-arm64")


def test_the_default_arm64_cpu_parameter_is_one_aws_publishes(aws_env):
    assert FAMILIES["cpu-arm64"].ami_parameter.endswith("al2023-ami-kernel-default-arm64")
    assert resolve_ami(Aws(REGION), "cpu-arm64").startswith("ami-")  # moto's copy of AWS's tree


def test_an_unparsable_instance_type_is_a_config_error():
    with pytest.raises(ConfigError, match="'inf2' is not an EC2 instance type"):
        family_of("inf2")


def test_ami_overrides():
    assert parse_ami_overrides("ami-1") == {name: "ami-1" for name in FAMILIES}
    assert parse_ami_overrides("neuron=ami-1, cpu=ami-2") == {"neuron": "ami-1", "cpu": "ami-2"}
    with pytest.raises(ConfigError, match="FAMILY=AMI_ID"):
        parse_ami_overrides("tpu=ami-1")


def test_a_configured_parameter_resolves(aws_env):
    boto("ssm").put_parameter(Name="/neuron-encoder-test/neuron/latest/image_id", Value="ami-0123456789abcdef0",
                              Type="String")
    assert resolve_ami(Aws(REGION), "neuron", "/neuron-encoder-test/neuron/latest/image_id") == "ami-0123456789abcdef0"


def test_the_default_cpu_parameter_is_one_aws_publishes(aws_env):
    # moto ships AWS's /aws/service/ami-amazon-linux-latest tree, so this path is checked against a copy of AWS's.
    assert resolve_ami(Aws(REGION), "cpu").startswith("ami-")


def test_a_missing_parameter_names_it_and_the_way_out(aws_env):
    # moto has no Neuron parameters: the same answer AWS gives once a path is renamed.
    with pytest.raises(DeployError) as info:
        resolve_ami(Aws(REGION), "neuron")
    message = str(info.value)
    assert message.startswith(f"SSM parameter {FAMILIES['neuron'].ami_parameter} (neuron image) does not exist")
    assert "--ami" in message and "ami_parameters.neuron" in message and "--path /aws/service/neuron" in message


def test_moto_refuses_writes_under_aws_so_tests_use_their_own_prefix(aws_env):
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError):
        boto("ssm").put_parameter(Name=FAMILIES["neuron"].ami_parameter, Value="ami-1", Type="String")
