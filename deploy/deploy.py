"""Launch the fleet a config describes: `python deploy/deploy.py deploy/configs/bert-base-fleet.json --bucket B`.

A fleet config is a JSON object whose keys are FleetConfig's fields (instance_types, bucket, region,
max_hours, spot, volume_gb, package, subnets, instance_profile, amis, ami_parameters, bench_configs,
compile_configs, note); the options below override it. No logic lives here: one launch_fleet call,
the same as `neuron-encoder deploy bench --config CONFIG`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neuron_encoder.deploy.aws import Aws
from neuron_encoder.deploy.fleet import launch_fleet, load_fleet_config
from neuron_encoder.errors import run_main


def run(config_path: Path, bucket: str | None = None, region: str | None = None, dry_run: bool = False) -> str:
    """Launch the fleet; returns the run id."""
    config = load_fleet_config(config_path, bucket=bucket, region=region)
    return launch_fleet(config, Aws(region=config.region, dry_run=dry_run)).run.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--bucket", help="S3 bucket in the region (overrides the config's)")
    parser.add_argument("--region", help="AWS region (overrides the config's and AWS_REGION)")
    parser.add_argument("--dry-run", action="store_true", help="print every call; create nothing")
    args = parser.parse_args()
    run_main(lambda: print(f"run: {run(args.config, args.bucket, args.region, args.dry_run)}"))


if __name__ == "__main__":
    main()
