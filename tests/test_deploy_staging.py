"""S3: the wheel of this checkout, the bucket checks, tagged uploads, and results back into a report."""

from __future__ import annotations

import zipfile

import pytest

from neuron_encoder.bench.report import write_report
from neuron_encoder.deploy import staging
from neuron_encoder.deploy.aws import Aws, Run
from neuron_encoder.errors import DeployError
from tests.moto_server import FIXTURE_RESULTS, REGION, boto, make_bucket

RUN_ID = "ne-20260101-000000-abcd"


def test_the_wheel_is_this_checkout(built_wheel):
    wheel = built_wheel  # staging.build_wheel(checkout_root(), ...), built once per session
    assert wheel.name == "neuron_encoder-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "neuron_encoder/deploy/userdata.py" in names and "neuron_encoder/cli.py" in names
    assert not any("__pycache__" in name or name.startswith(("tests/", "deploy/")) for name in names)


def test_a_bucket_elsewhere_or_missing_is_one_line(aws_env):
    make_bucket("ne-eu-bucket", "eu-west-1")
    with pytest.raises(DeployError, match="bucket ne-eu-bucket is in eu-west-1, not us-east-1"):
        staging.check_bucket(Aws(REGION), "ne-eu-bucket")
    staging.check_bucket(Aws("eu-west-1"), "ne-eu-bucket")
    with pytest.raises(DeployError, match="bucket nope-bucket does not exist"):
        staging.check_bucket(Aws(REGION), "nope-bucket")


def test_uploads_carry_the_run_tags(aws_env, tmp_path):
    bucket = make_bucket()
    path = tmp_path / "bench.py"
    path.write_text("print('hi')\n")
    run = Run(RUN_ID, "arn:aws:iam::123456789012:user/me", None)
    key = staging.upload(Aws(REGION), bucket, f"{staging.staging_prefix(RUN_ID)}/scripts/bench.py", path, run.tags)
    assert key == f"neuron-encoder/{RUN_ID}/staging/scripts/bench.py"
    assert boto("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == b"print('hi')\n"
    tags = boto("s3").get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["run-id"] == RUN_ID


def test_collect_then_report_prices_the_rows(aws_env, tmp_path):
    bucket, s3 = make_bucket(), boto("s3")
    prefix = f"{staging.results_prefix(RUN_ID)}/inf2.xlarge-i-0abc"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bench-inf2.json",
                  Body=(FIXTURE_RESULTS / "inf2-xlarge-neuron.json").read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/report/merged.json", Body=b'{"schema": "neuron-encoder/bench-report"}')
    s3.put_object(Bucket=bucket, Key=f"{prefix}/run.log", Body=b"neuron-encoder: finished with exit code 0\n")
    collected = staging.collect(Aws(REGION), bucket, RUN_ID, tmp_path / "out")
    assert [p.name for p in collected.results] == ["inf2.xlarge-i-0abc__bench-inf2.json"]
    assert collected.skipped == [f"{prefix}/report/merged.json"]
    assert (tmp_path / "out" / "logs" / "inf2.xlarge-i-0abc" / "run.log").read_text().startswith("neuron-encoder:")

    lines = write_report(sorted((tmp_path / "out").glob("*.json")), tmp_path / "report").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| engine | instance"))
    table = lines[start:lines.index("", start)]  # the results table, up to its blank line
    cost_column = table[0].split(" | ").index("USD / 1M inf")
    rows = [line.split(" | ") for line in table[2:]]
    assert len(rows) == 4 and all(row[1] == "inf2.xlarge" and float(row[cost_column]) > 0 for row in rows)


def test_collect_before_anything_was_uploaded_says_so(aws_env, tmp_path):
    bucket = make_bucket()
    with pytest.raises(DeployError, match=f"no results under s3://{bucket}/neuron-encoder/{RUN_ID}/results/ yet"):
        staging.collect(Aws(REGION), bucket, RUN_ID, tmp_path / "out")
    assert not (tmp_path / "out").exists()
