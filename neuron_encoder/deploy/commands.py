"""`neuron-encoder deploy ...`: each command parses its options and calls one library function.

Registered in cli.py with `app.add_typer(deploy_app, name="deploy")`; errors reach cli.main, which
maps DeployError to exit code 9. boto3 is imported only when a command runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

deploy_app = typer.Typer(no_args_is_help=True, help="Run the benchmark on an EC2 fleet, or serve an artifact on a "
                                                    "SageMaker endpoint that scales (boto3; costs money).")

REGION_HELP = "AWS region (default: AWS_REGION / your profile's)"


def _aws(region: Optional[str], dry_run: bool = False):
    from .aws import Aws
    for name in ("boto3", "botocore"):  # cli.main logs INFO; botocore's ("Found credentials in ...") is noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    return Aws(region=region, dry_run=dry_run, echo=typer.echo)


@deploy_app.command("bench")
def bench(
    instance_types: Optional[str] = typer.Option(None, help="comma-separated, e.g. inf2.xlarge,trn1.2xlarge,"
                                                            "g5.xlarge,c7i.xlarge (default: the config's)"),
    bucket: Optional[str] = typer.Option(None, help="S3 bucket in the region, for staging and results"),
    region: Optional[str] = typer.Option(None, help=REGION_HELP),
    config: Optional[Path] = typer.Option(None, help="fleet config (deploy/configs/*.json)"),
    max_hours: Optional[float] = typer.Option(None, help="every instance shuts down (and terminates) after this "
                                                         "[default: 2]"),
    spot: bool = typer.Option(False, "--spot", help="spot instances, with the same safety settings"),
    subnet: Optional[str] = typer.Option(None, help="comma-separated subnet ids, tried in order (default: the "
                                                    "default VPC's, in every zone offering the type)"),
    ami: Optional[str] = typer.Option(None, help="AMI id for every family, or neuron=ami-..,gpu=ami-..,cpu=ami-.."),
    package: Optional[str] = typer.Option(None, help="pip spec to install instead of a wheel of this checkout"),
    instance_profile: Optional[str] = typer.Option(None, help="an existing instance profile (default: one per run)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every call; create nothing"),
) -> None:
    """Start one self-terminating instance per type; each benchmarks itself and uploads to S3."""
    from .amis import parse_ami_overrides
    from .fleet import launch_fleet, load_fleet_config
    fleet_config = load_fleet_config(config, instance_types=instance_types, bucket=bucket, region=region,
                                     max_hours=max_hours, spot=spot or None, subnets=subnet,
                                     amis=parse_ami_overrides(ami), package=package,
                                     instance_profile=instance_profile)
    launch_fleet(fleet_config, _aws(fleet_config.region, dry_run), echo=typer.echo)


@deploy_app.command("status")
def status(run: str = typer.Argument(..., help="run id printed by deploy bench"),
           region: Optional[str] = typer.Option(None, help=REGION_HELP)) -> None:
    """The run's instances: type, zone, state, when they expire."""
    from .fleet import status as run_status
    rows = run_status(_aws(region), run)
    if not rows:
        typer.echo(f"no instances of {run} (terminated ones vanish from EC2 after about an hour)")
    for row in rows:
        typer.echo(f"{row['instance']}  {row['type']:<14} {row['zone']:<12} {row['state']:<14} "
                   f"expires {row['expires-at']}")


@deploy_app.command("collect")
def collect(run: str = typer.Argument(..., help="run id"),
            out_dir: Path = typer.Option(..., help="where the result JSONs go (then: neuron-encoder report "
                                                   "DIR/*.json)"),
            bucket: Optional[str] = typer.Option(None, help="the run's bucket (default: from its tags)"),
            region: Optional[str] = typer.Option(None, help=REGION_HELP)) -> None:
    """Download the run's results: bench result JSONs into DIR, logs into DIR/logs."""
    from .fleet import collect_run
    collected = collect_run(_aws(region), run, out_dir, bucket)
    typer.echo(f"{len(collected.results)} result file(s), {len(collected.logs)} log file(s) in {out_dir}; "
               f"next: neuron-encoder report {out_dir}/*.json --out-dir {out_dir}/report")


@deploy_app.command("cleanup")
def cleanup(run: Optional[str] = typer.Argument(None, help="run id (or --expired)"),
            expired: bool = typer.Option(False, "--expired", help="every run of this tool past its expires-at"),
            region: Optional[str] = typer.Option(None, help=REGION_HELP),
            dry_run: bool = typer.Option(False, "--dry-run", help="print the calls; delete nothing")) -> None:
    """Terminate the run's instances; delete the security group and role it created."""
    from .fleet import cleanup as clean
    clean(_aws(region, dry_run), run, expired, echo=typer.echo)


@deploy_app.command("endpoint")
def endpoint(
    artifact: Path = typer.Option(..., help="compiled artifact directory (neuron-encoder compile)"),
    instance_type: str = typer.Option("ml.inf2.xlarge", help="SageMaker instance type"),
    bucket: str = typer.Option(..., help="S3 bucket in the region for model.tar.gz"),
    role: str = typer.Option(..., help="SageMaker execution role ARN (you need iam:PassRole on it)"),
    image: Optional[str] = typer.Option(None, help="container image URI (default: pytorch-inference-neuronx of "
                                                   "the region)"),
    name: Optional[str] = typer.Option(None, help="endpoint, config and model name (default: from the model)"),
    min_instances: int = typer.Option(1, "--min", help="autoscaling minimum instance count"),
    max_instances: int = typer.Option(4, "--max", help="autoscaling maximum instance count"),
    target_invocations: Optional[float] = typer.Option(None, help="invocations per instance per minute to keep"),
    from_bench: Optional[Path] = typer.Option(None, help="size the target from a bench result file"),
    safety: float = typer.Option(0.5, help="fraction of the measured throughput to target"),
    texts_per_request: int = typer.Option(1, help="texts your clients send per request"),
    entry_point: Optional[Path] = typer.Option(None, help="inference.py (default: deploy/sagemaker/inference.py)"),
    region: Optional[str] = typer.Option(None, help=REGION_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every call; create nothing"),
) -> None:
    """Package the artifact, create model, endpoint config and endpoint, wait, and register autoscaling."""
    from .sagemaker import Scaling, deploy_endpoint
    deploy_endpoint(_aws(region, dry_run), artifact, instance_type, bucket, role, image=image, name=name,
                    scaling=Scaling(min_instances, max_instances, target_invocations, from_bench, safety,
                                    texts_per_request),
                    entry_point=entry_point, echo=typer.echo)


@deploy_app.command("invoke")
def invoke(name: str = typer.Argument(..., help="endpoint name"),
           texts: List[str] = typer.Argument(..., help="texts to embed, classify, or rank against --query"),
           normalize: bool = typer.Option(True, help="L2-normalise the embeddings (an embedder)"),
           truncate: bool = typer.Option(False, help="cut texts longer than the largest compiled bucket"),
           query: Optional[str] = typer.Option(None, help="a reranker: rank the texts against this query"),
           scores: bool = typer.Option(False, "--scores", help="a classifier: label scores for each text"),
           raw_scores: bool = typer.Option(False, "--raw-scores", help="a classifier or reranker: logits"),
           region: Optional[str] = typer.Option(None, help=REGION_HELP)) -> None:
    """Call the endpoint (sagemaker-runtime) with the /invocations body of its task; prints the JSON it returns."""
    from .sagemaker import invocation_body, invoke as call_endpoint
    body = invocation_body(texts, normalize, truncate, query, scores, raw_scores)
    typer.echo(json.dumps(call_endpoint(_aws(region), name, body)))


@deploy_app.command("delete")
def delete(name: str = typer.Argument(..., help="endpoint name"),
           region: Optional[str] = typer.Option(None, help=REGION_HELP),
           dry_run: bool = typer.Option(False, "--dry-run", help="print the calls; delete nothing")) -> None:
    """Deregister autoscaling, delete the endpoint, its config and its model."""
    from .sagemaker import delete_all
    delete_all(_aws(region, dry_run), name, echo=typer.echo)
