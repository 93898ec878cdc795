"""`deploy bench` against moto: what EC2, IAM and S3 report afterwards, dry-run, cleanup, and bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from neuron_encoder.deploy import ec2, fleet, staging
from neuron_encoder.deploy.aws import Aws
from neuron_encoder.deploy.userdata import USER_DATA_LIMIT
from neuron_encoder.errors import ConfigError, DeployError
from tests.moto_server import REGION, boto, make_bucket, policy_document, register_test_images

TYPES = ("inf2.xlarge", "trn1.2xlarge", "g5.xlarge", "c7i.xlarge")
SPEC = "neuron-encoder[bench]==0.1.0"


@pytest.fixture
def account(aws_env):
    """An account with a bucket and one test AMI per family, published under a non-/aws/ SSM prefix."""
    return {"bucket": make_bucket(), "ami_parameters": register_test_images()}


def config(account, **changes) -> fleet.FleetConfig:
    fields = dict(instance_types=TYPES, bucket=account["bucket"], ami_parameters=account["ami_parameters"],
                  package=SPEC)
    fields.update(changes)
    return fleet.load_fleet_config(None, **fields)


def quiet(line: str) -> None:
    pass


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def test_what_ec2_reports_for_every_instance(account):
    launched = fleet.launch_fleet(config(account), Aws(REGION), echo=quiet)
    client = boto("ec2")
    instances = [i for r in client.describe_instances(Filters=[{"Name": "tag:run-id", "Values": [
        launched.run.run_id]}])["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceType"] for i in instances) == sorted(TYPES)
    for instance in instances:
        iid = instance["InstanceId"]
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        assert "KeyName" not in instance
        assert instance["IamInstanceProfile"]["Arn"].endswith(f"/neuron-encoder-{launched.run.run_id}")
        tags = tags_of(instance)
        assert tags["tool"] == "neuron-encoder" and tags["run-id"] == launched.run.run_id
        assert tags["owner"].startswith("arn:aws:") and datetime.fromisoformat(tags["expires-at"]) > \
            datetime.now(timezone.utc) + timedelta(hours=1.9)
        behaviour = client.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        user_data = base64.b64decode(client.describe_instance_attribute(
            InstanceId=iid, Attribute="userData")["UserData"]["Value"]).decode()
        assert user_data.splitlines()[3] == "shutdown -h +120" and len(user_data.encode()) < USER_DATA_LIMIT
        assert f"on {instance['InstanceType']} " in user_data.splitlines()[1]
        volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
        volumes = client.describe_volumes(VolumeIds=volume_ids)["Volumes"]
        assert [(v["Encrypted"], v["VolumeType"], v["Size"]) for v in volumes] == [(True, "gp3", 100)]
        assert [m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]] == [True]
        assert tags_of(volumes[0])["run-id"] == launched.run.run_id
    groups = {g for i in instances for g in (s["GroupId"] for s in i["SecurityGroups"])}
    assert len(groups) == 1
    group = client.describe_security_groups(GroupIds=list(groups))["SecurityGroups"][0]
    assert group["IpPermissions"] == []  # no inbound rule
    assert tags_of(group)["run-id"] == launched.run.run_id


def test_staged_objects_and_the_role_that_reads_them(account, built_wheel, monkeypatch):
    import shutil
    monkeypatch.setattr(staging, "build_wheel", lambda root, out: Path(shutil.copy(built_wheel, out)))
    launched = fleet.launch_fleet(config(account, package=None, instance_types=("inf2.xlarge", "c7i.xlarge")),
                                  Aws(REGION), echo=quiet)
    run_id = launched.run.run_id
    prefix = staging.staging_prefix(run_id)
    listed = boto("s3").list_objects_v2(Bucket=account["bucket"], Prefix=prefix)["Contents"]
    keys = sorted(o["Key"][len(prefix) + 1:] for o in listed)
    assert keys == ["configs/01-fleet-neuron.json", "configs/02-fleet-cpu.json", "scripts/bench.py",
                    "wheel/neuron_encoder-0.1.0-py3-none-any.whl"]  # no compile.py: no compile config
    wheel = boto("s3").get_object(Bucket=account["bucket"], Key=f"{prefix}/wheel/neuron_encoder-0.1.0-py3-none-any.whl")
    assert wheel["Body"].read()[:2] == b"PK"  # a zip
    policy = policy_document(boto("iam").get_role_policy(RoleName=f"neuron-encoder-{run_id}",
                                                        PolicyName="neuron-encoder-run")["PolicyDocument"])
    assert policy["Statement"][0]["Resource"] == f"arn:aws:s3:::{account['bucket']}/neuron-encoder/{run_id}/results/*"
    assert policy["Statement"][1]["Resource"] == sorted(f"arn:aws:s3:::{account['bucket']}/{o['Key']}" for o in listed)
    user_data = base64.b64decode(boto("ec2").describe_instance_attribute(
        InstanceId=launched.instances[0]["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
    assert f"{prefix}/wheel/neuron_encoder-0.1.0-py3-none-any.whl" in user_data


def test_dry_run_creates_nothing(account):
    printed = []
    launched = fleet.launch_fleet(config(account), Aws(REGION, dry_run=True, echo=printed.append), echo=printed.append)
    assert launched.instances and all(str(i["InstanceId"]).startswith("<dry-run") for i in launched.instances)
    assert [i for r in boto("ec2").describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"] == []
    assert [g["GroupName"] for g in boto("ec2").describe_security_groups()["SecurityGroups"]] == ["default"]
    assert boto("iam").list_roles(PathPrefix="/neuron-encoder/")["Roles"] == []
    assert "Contents" not in boto("s3").list_objects_v2(Bucket=account["bucket"])
    runs = [text for text in printed if text.startswith("[dry-run] ec2.run_instances (not sent)")]
    assert len(runs) == len(TYPES)
    sent = json.loads(runs[0].split("\n", 1)[1])
    assert sent["MetadataOptions"]["HttpTokens"] == "required" and sent["InstanceType"] == TYPES[0]


def test_cleanup_leaves_nothing_tagged_running(account):
    aws = Aws(REGION)
    launched = fleet.launch_fleet(config(account, instance_types=TYPES[1::2]), aws, echo=quiet)
    done = fleet.cleanup(aws, launched.run.run_id, echo=quiet)
    assert sum(line.startswith("terminated i-") for line in done) == 2
    assert ec2.instances_of(aws, launched.run.run_id) == []
    assert ec2.security_groups_of(aws, launched.run.run_id) == []
    assert boto("iam").list_roles(PathPrefix="/neuron-encoder/")["Roles"] == []
    assert fleet.cleanup(aws, launched.run.run_id, echo=quiet) == []  # a second cleanup finds nothing


def test_cleanup_expired_takes_only_what_is_past_its_expiry(account):
    aws = Aws(REGION)
    current = fleet.launch_fleet(config(account, instance_types=("c7i.xlarge",)), aws, echo=quiet)
    client = boto("ec2")
    old = client.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "tool", "Value": "neuron-encoder"},
                                             {"Key": "run-id", "Value": "ne-old"},
                                             {"Key": "expires-at", "Value": "2020-01-01T00:00:00+00:00"}]}])
    done = fleet.cleanup(aws, expired=True, echo=quiet)
    assert done == [f"terminated {old['Instances'][0]['InstanceId']}"]
    assert [i["InstanceId"] for i in ec2.instances_of(aws)] == [current.instances[0]["InstanceId"]]


def test_a_failure_after_creating_shows_the_cleanup_command_that_works(account):
    aws = Aws(REGION)
    with pytest.raises(DeployError) as info:
        fleet.launch_fleet(config(account, subnets=("subnet-00000000",)), aws, echo=quiet)
    message = str(info.value)
    run_id = message.split("neuron-encoder deploy cleanup ")[1].split()[0]
    assert "created so far: IAM role and instance profile neuron-encoder-" in message
    assert message.endswith(f"neuron-encoder deploy cleanup {run_id} --region {REGION}")
    fleet.cleanup(aws, run_id, echo=quiet)
    assert boto("iam").list_roles(PathPrefix="/neuron-encoder/")["Roles"] == []


def test_a_bucket_in_another_region_stops_before_anything_exists(aws_env):
    make_bucket("ne-eu-bucket", "eu-west-1")
    with pytest.raises(DeployError, match="bucket ne-eu-bucket is in eu-west-1, not us-east-1: pass --region "
                                          "eu-west-1, or a bucket in us-east-1"):
        fleet.launch_fleet(fleet.load_fleet_config(None, instance_types="c7i.xlarge", bucket="ne-eu-bucket",
                                                   package=SPEC), Aws(REGION), echo=quiet)
    assert boto("iam").list_roles()["Roles"] == []


def test_a_missing_bucket_says_how_to_make_it(aws_env):
    with pytest.raises(DeployError, match=r"bucket nope-bucket does not exist: create it with `aws s3 mb"):
        fleet.launch_fleet(fleet.load_fleet_config(None, instance_types="c7i.xlarge", bucket="nope-bucket",
                                                   package=SPEC), Aws(REGION), echo=quiet)


def test_fleet_config_files_and_overrides(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"instance_types": ["inf2.xlarge"], "bucket": "b", "max_hours": 1, "spot": True}))
    loaded = fleet.load_fleet_config(path, max_hours=3, instance_types=None, subnets="subnet-a, subnet-b")
    assert (loaded.instance_types, loaded.max_hours, loaded.spot, loaded.subnets) == (
        ("inf2.xlarge",), 3, True, ("subnet-a", "subnet-b"))
    assert loaded.family_file({"neuron": "n.json", "inf2.xlarge": "x.json"}, "inf2.xlarge", None) == "x.json"
    path.write_text(json.dumps({"instance_types": ["inf2.xlarge"], "bucket": "b", "max_hour": 1}))
    with pytest.raises(ConfigError, match=r"unknown keys \['max_hour'\]"):
        fleet.load_fleet_config(path)
    with pytest.raises(ConfigError, match="max_hours must be within"):
        fleet.load_fleet_config(None, instance_types="inf2.xlarge", bucket="b", max_hours=100)
    with pytest.raises(ConfigError, match="no bucket"):
        fleet.load_fleet_config(None, instance_types="inf2.xlarge")


def test_the_example_configs_load_and_name_files_that_exist():
    root = staging.checkout_root()
    for path in sorted((root / "deploy" / "configs").glob("*.json")):
        loaded = fleet.load_fleet_config(path, bucket="b")
        for instance_type in loaded.instance_types:
            family = instance_type.split(".")[0]
            for table, default in ((loaded.bench_configs, "x"), (loaded.compile_configs, None)):
                chosen = loaded.family_file(table, instance_type, default if table is loaded.bench_configs else None)
                assert chosen is None or chosen == "x" or (root / chosen).is_file(), (path, family, chosen)


def test_the_neuron_bench_configs_compile_as_aws_published():
    """Both configs that claim AWS's published setting pass what restores it since Neuron 2.27: matmult-bf16
    without mixed-precision accumulation (issue 20, item 8)."""
    from neuron_encoder.backends.neuron import PUBLISHED_ARGS
    root = staging.checkout_root()
    for path in (fleet.DEFAULT_BENCH["neuron"], "benchmarks/configs/inf2-neuronperf.json"):
        runs = [run for run in json.loads((root / path).read_text())["runs"] if run["engines"] == "neuron"]
        assert runs, path
        for run in runs:
            assert (run["auto_cast"], run["auto_cast_type"]) == ("matmult", "bf16"), path
            assert set(PUBLISHED_ARGS) <= set(run["compiler_args"].split()), path
