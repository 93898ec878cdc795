"""`deploy bench`: one self-terminating instance per type, each benchmarking itself into S3.

A fleet config (deploy/configs/*.json) names the instance types and, per family or per type, the
benchmark config (and optionally a compile config) each instance runs; command-line options
override it. Every step builds its call as data through Aws, so --dry-run shows the whole run.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, DeployError
from ..files import read_json_file
from . import ec2, iam, staging
from .amis import FAMILIES, check_architecture, family_of, image_of, resolve_ami
from .aws import Aws, Run, parse_expiry
from .userdata import Script, render

Echo = Callable[[str], None]

# Per family, what each instance runs unless the fleet config says otherwise (paths in this checkout).
DEFAULT_BENCH = {"neuron": "benchmarks/configs/fleet-neuron.json", "gpu": "benchmarks/configs/fleet-gpu.json",
                 "cpu": "benchmarks/configs/fleet-cpu.json"}
SCRIPTS = {"bench": "benchmarks/bench.py", "compile": "compile/compile.py"}
MAX_HOURS_LIMIT = 48.0


@dataclass(frozen=True)
class FleetConfig:
    """What `deploy bench` launches; the JSON keys of a fleet config are these field names."""

    instance_types: tuple[str, ...] = ()
    bucket: str | None = None
    region: str | None = None
    max_hours: float = 2.0
    spot: bool = False
    volume_gb: int = 100
    package: str | None = None  # a pip spec to install instead of a wheel of this checkout
    subnets: tuple[str, ...] = ()
    instance_profile: str | None = None  # an existing profile, instead of one made for the run
    amis: dict[str, str] = field(default_factory=dict)  # family -> AMI id (--ami)
    ami_parameters: dict[str, str] = field(default_factory=dict)  # family -> SSM parameter path
    bench_configs: dict[str, str] = field(default_factory=dict)  # family or instance type -> bench config
    compile_configs: dict[str, str] = field(default_factory=dict)  # family or instance type -> compile config
    note: str = ""

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ConfigError("no instance types: pass --instance-types inf2.xlarge,... or list them in the config")
        for instance_type in self.instance_types:
            image_of(instance_type)  # an unparsable type, or one with no image of its architecture, stops here
        if not 0 < self.max_hours <= MAX_HOURS_LIMIT:
            raise ConfigError(f"max_hours must be within (0, {MAX_HOURS_LIMIT:g}], got {self.max_hours}")
        if not self.bucket:
            raise ConfigError("no bucket: pass --bucket BUCKET (in the run's region) for staging and results")
        if not 8 <= self.volume_gb <= 16384:
            raise ConfigError(f"volume_gb must be within 8..16384, got {self.volume_gb}")
        for key in (*self.ami_parameters, *self.amis):
            if key not in FAMILIES:
                raise ConfigError(f"unknown family {key!r} in amis/ami_parameters: use one of {sorted(FAMILIES)}")

    def family_file(self, table: dict[str, str], instance_type: str, default: str | None) -> str | None:
        """A per-type entry wins over a per-family one, which wins over the default."""
        return table.get(instance_type) or table.get(family_of(instance_type)) or default


def load_fleet_config(path: str | Path | None = None, **overrides: Any) -> FleetConfig:
    """A fleet config file (or none) with command-line values on top; None values do not override."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_json_file(Path(path), "fleet config", ConfigError)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a fleet config is a JSON object")
    names = {f.name for f in fields(FleetConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known: {sorted(names)}")
    data.update({k: v for k, v in overrides.items() if v is not None and v != () and v != {}})
    for key in ("instance_types", "subnets"):
        if isinstance(data.get(key), str):
            data[key] = [part.strip() for part in data[key].split(",") if part.strip()]
        data[key] = tuple(data.get(key) or ())
    try:
        return FleetConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"{path or 'fleet options'}: {exc}") from None


@dataclass
class FleetRun:
    """What a launch made, for the summary and for the cleanup command when a step fails."""

    run: Run
    region: str
    instances: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def _resolve_path(path: str, root: Path) -> Path:
    candidate = Path(path)
    for option in (candidate, root / candidate):
        if option.is_file():
            return option
    raise ConfigError(f"{path}: no such file (looked here and in {root})")


def _stage_inputs(aws: Aws, config: FleetConfig, run: Run, root: Path, workdir: Path) -> dict[str, str]:
    """Upload the wheel (or nothing, for a PyPI spec), the scripts and every config; {local name: key}."""
    prefix, keys = staging.staging_prefix(run.run_id), {}
    files = {"bench": _resolve_path(SCRIPTS["bench"], root)}
    for instance_type in config.instance_types:
        for kind, table, default in (("bench", config.bench_configs, DEFAULT_BENCH[family_of(instance_type)]),
                                     ("compile", config.compile_configs, None)):
            chosen = config.family_file(table, instance_type, default)
            if chosen:
                files[f"{kind}:{instance_type}"] = _resolve_path(chosen, root)
    if any(name.startswith("compile:") for name in files):  # only what an instance will read
        files["compile"] = _resolve_path(SCRIPTS["compile"], root)
    if not config.package:
        files["wheel"] = staging.build_wheel(root, workdir)
    seen: dict[Path, str] = {}
    for name, path in files.items():
        if path not in seen:  # configs are numbered (two may share a file name); a wheel keeps its own name
            key = (f"configs/{len(seen):02d}-{path.name}" if ":" in name else
                   f"{name if name == 'wheel' else 'scripts'}/{path.name}")
            seen[path] = staging.upload(aws, config.bucket or "", f"{prefix}/{key}", path, run.tags)
        keys[name] = seen[path]
    return keys


def _script(config: FleetConfig, run: Run, instance_type: str, region: str, keys: dict[str, str]) -> str:
    return render(Script(
        run_id=run.run_id, instance_type=instance_type, family=family_of(instance_type), region=region,
        bucket=config.bucket or "", results_prefix=staging.results_prefix(run.run_id),
        max_minutes=max(1, int(config.max_hours * 60)), bench_script_key=keys["bench"],
        bench_config_key=keys[f"bench:{instance_type}"], wheel_key=keys.get("wheel"), package_spec=config.package,
        compile_script_key=keys["compile"] if f"compile:{instance_type}" in keys else None,
        compile_config_key=keys.get(f"compile:{instance_type}")))


def _images(aws: Aws, config: FleetConfig) -> dict[str, tuple[str, str]]:
    """{image name (amis.FAMILIES): (AMI id, root device name)} for the fleet's types, each AMI checked
    against the architecture of its entry."""
    images = {}
    for name in sorted({image_of(t) for t in config.instance_types}):
        image = config.amis.get(name) or resolve_ami(aws, name, config.ami_parameters.get(name))
        device, architecture = ec2.describe_image(aws, image)
        check_architecture(image, architecture, name)
        images[name] = (image, device)
    return images


def launch_fleet(config: FleetConfig, aws: Aws, echo: Echo = print, root: Path | None = None) -> FleetRun:
    """Check, stage, create the role and group, and start one instance per type; print the run id."""
    root = root or staging.checkout_root()
    owner = aws.caller_arn()  # first: bad credentials stop here, before anything exists
    staging.check_bucket(aws, config.bucket or "")
    run = Run.new(owner, config.max_hours)
    run = replace(run, results=f"s3://{config.bucket}/{staging.results_prefix(run.run_id)}/")
    fleet = FleetRun(run, aws.region or "")
    images = _images(aws, config)
    echo(f"run {run.run_id}: {', '.join(config.instance_types)} in {aws.region}, "
         f"terminating by {run.expires_at:%Y-%m-%d %H:%M} UTC at the latest")
    try:
        _create(aws, config, fleet, images, root, echo)
    except DeployError as exc:
        if not fleet.created:
            raise
        raise DeployError(f"{exc}; created so far: {', '.join(fleet.created)}; remove them with: "
                          f"{run.cleanup_hint(fleet.region)}") from None
    if aws.dry_run:
        echo(f"dry run: nothing was created; without --dry-run {len(fleet.instances)} instance(s) would start")
        return fleet
    echo(f"run {run.run_id}: {len(fleet.instances)} instance(s) started; results will appear under {run.results}")
    echo(f"next: neuron-encoder deploy status {run.run_id} --region {fleet.region}; then deploy collect "
         f"{run.run_id} --out-dir results/{run.run_id}; clean up early with: {run.cleanup_hint(fleet.region)}")
    return fleet


def _create(aws: Aws, config: FleetConfig, fleet: FleetRun, images: dict[str, tuple[str, str]], root: Path,
            echo: Echo) -> None:
    run = fleet.run
    with tempfile.TemporaryDirectory(prefix="neuron-encoder-wheel-") as workdir:
        keys = _stage_inputs(aws, config, run, root, Path(workdir))
    profile = config.instance_profile
    if not profile:
        fleet.created.append(f"IAM role and instance profile {iam.role_name(run.run_id)}")
        profile = iam.create_instance_profile(aws, run, config.bucket or "",
                                              staging.results_prefix(run.run_id), keys.values())
    group = ec2.security_group(aws, run, ec2.vpc_of(aws, list(config.subnets) or None))
    fleet.created.append(f"security group {group}")
    for instance_type in config.instance_types:
        family = family_of(instance_type)
        image, device = images[image_of(instance_type)]
        launch = ec2.Launch(instance_type, family, image, _script(config, run, instance_type, aws.region or "", keys),
                            group, profile, config.volume_gb, config.spot)
        subnets = ec2.candidate_subnets(aws, instance_type, list(config.subnets) or None)
        instance = ec2.launch_instance(aws, launch, run, subnets, device, echo)
        fleet.instances.append(instance)
        fleet.created.append(f"instance {instance['InstanceId']} ({instance_type})")


def status(aws: Aws, run_id: str) -> list[dict[str, str]]:
    """One row per instance of the run still known to EC2 (terminated ones vanish after about an hour)."""
    return [{"instance": i["InstanceId"], "type": i["InstanceType"], "state": i["State"]["Name"],
             "zone": i.get("Placement", {}).get("AvailabilityZone", ""), "launched": str(i.get("LaunchTime", "")),
             "expires-at": ec2.tag(i, "expires-at") or "", "results": ec2.tag(i, "results") or ""}
            for i in ec2.instances_of(aws, run_id, live_only=False)]


def results_location(aws: Aws, run_id: str, bucket: str | None = None) -> str:
    """The bucket a run wrote to: given, or read from its role's or instances' `results` tag."""
    if bucket:
        return bucket
    uris = [row["results"] for row in status(aws, run_id) if row["results"]]
    if not uris:
        try:
            tags = aws.call("iam", "list_role_tags", {"RoleName": iam.role_name(run_id)}, read_only=True)["Tags"]
        except DeployError:
            tags = []
        uris = [t["Value"] for t in tags if t["Key"] == "results"]
    if not uris:
        raise DeployError(f"cannot tell which bucket run {run_id} wrote to (its instances and role are gone): "
                          "pass --bucket")
    return uris[0].removeprefix("s3://").split("/", 1)[0]


def collect_run(aws: Aws, run_id: str, out_dir: Path, bucket: str | None = None) -> staging.Collected:
    """Download a run's results from the bucket its tags name (or `bucket`)."""
    return staging.collect(aws, results_location(aws, run_id, bucket), run_id, Path(out_dir))


def cleanup(aws: Aws, run_id: str | None = None, expired: bool = False, echo: Echo = print) -> list[str]:
    """Terminate what carries the run's tags (or is past its expiry) and delete the role and group it made."""
    if not run_id and not expired:
        raise ConfigError("give a RUN id to clean up, or --expired for every run past its expiry")
    instances = ec2.instances_of(aws, run_id)
    groups = ec2.security_groups_of(aws, run_id)
    roles = iam.run_roles(aws)
    if run_id:
        runs = {run_id}
    else:
        now = datetime.now(timezone.utc)
        instances = [i for i in instances if ec2.is_expired(i, now)]
        groups = [g for g in groups if ec2.is_expired(g, now)]
        runs = {ec2.tag(r, "run-id") for r in instances + groups}
        runs |= {run for run, expiry in roles.items() if (parse_expiry(expiry or "") or now) < now}
    done = []
    ids = [i["InstanceId"] for i in instances]
    ec2.terminate(aws, ids)
    done += [f"terminated {i}" for i in ids]
    for group in groups:
        ec2.delete_security_group(aws, group["GroupId"])
        done.append(f"deleted security group {group['GroupId']}")
    for run in sorted(r for r in runs if r in roles):
        done += iam.delete_instance_profile(aws, run)
    for line in done or ["nothing to clean up"]:
        echo(line)
    return done
