"""A SageMaker real-time endpoint for a compiled artifact, in AWS's pytorch-inference-neuronx container.

model.tar.gz holds the artifact unchanged under artifact/ (load_compiled checks every file against
its manifest, so nothing else may sit beside it), the handlers as code/inference.py and this package
as code/neuron_encoder/: the container puts code/ on the Python path and needs no network. A Neuron
artifact only loads on the SDK it was compiled with, so the image's versions are checked against
the manifest's before anything is created.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import artifact, platforms
from ..errors import DeployError
from ..files import utc_stamp
from . import autoscaling, staging
from .autoscaling import VARIANT
from .aws import Aws, AwsCallError, Run

Echo = Callable[[str], None]

REPOSITORY = "pytorch-inference-neuronx"
# The last SDK whose DLCs ship torch-neuronx (trace() artifacts): the platform table's SageMaker release.
# Tag pattern: aws-neuron/deep-learning-containers README, e.g. 2.9.0-neuronx-py312-sdk2.31.0-ubuntu24.04.
DEFAULT_IMAGE_TAG = platforms.RELEASES[platforms.SAGEMAKER].container_tags[0]
_TAG = re.compile(r"^(?P<torch>\d+\.\d+(?:\.\d+)?)-neuronx-py(?P<python>\d+)-sdk(?P<sdk>[\d.]+)-(?P<os>[\w.]+)$")
# DLC registry accounts: 763104351884 unless listed; regions with Neuron containers
# (aws/deep-learning-containers available_images.md, "Neuron" column).
_REGISTRY_EXCEPTIONS = {"af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-northeast-3": "364406365360",
                        "ap-southeast-3": "907027046896", "eu-south-1": "692866216735", "me-south-1": "217643126080",
                        "me-central-1": "914824155844", "cn-north-1": "727897471807",
                        "cn-northwest-1": "727897471807"}
NEURON_CONTAINER_REGIONS = ("us-east-1", "us-east-2", "us-west-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
                            "ap-east-2", "ap-northeast-1", "eu-central-1", "eu-west-1", "eu-west-3", "sa-east-1")
# Startup is download + extract + one NEFF load per core (+ the first-load check of a cross-compiled
# artifact): minutes, not the seconds a CPU model takes. Both bounds are 60..3600 s (SageMaker API).
STARTUP_HEALTH_CHECK_S = 900
MODEL_DOWNLOAD_S = 900
# The inference toolkit passes SAGEMAKER_MODEL_SERVER_TIMEOUT (default 60 s) to TorchServe as its response
# timeout; the health-check timeout above does not extend it, and a first request may wait on a NEFF load.
MODEL_SERVER_TIMEOUT_S = 600


def image_uri(region: str, tag: str = DEFAULT_IMAGE_TAG) -> str:
    """The pytorch-inference-neuronx image of `region`; a region AWS lists no Neuron DLC for is an error."""
    if region not in NEURON_CONTAINER_REGIONS:
        raise DeployError(f"AWS lists no Neuron deep learning container in {region}: pass --image URI (an image "
                          f"in {region}'s ECR) or use one of {', '.join(NEURON_CONTAINER_REGIONS)}")
    account = _REGISTRY_EXCEPTIONS.get(region, "763104351884")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{REPOSITORY}:{tag}"


def image_versions(uri: str) -> dict[str, str] | None:
    """{torch, python, sdk, os} from a DLC tag; None for an image whose tag does not say."""
    match = _TAG.match(uri.rsplit(":", 1)[-1]) if ":" in uri.rsplit("/", 1)[-1] else None
    return match.groupdict() if match else None


def _minor(version: str | None) -> str | None:
    parts = (version or "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) else None


def check_compatibility(manifest: dict[str, Any], uri: str, instance_type: str) -> list[str]:
    """Raise when the artifact cannot run on this image and instance; return what could not be checked."""
    backend, target = manifest.get("backend"), manifest.get("target")
    versions = manifest.get("versions") or {}
    family = platforms.family(instance_type)
    neuron_instance = family is not None and family.kind == "neuron"
    if neuron_instance and backend != "neuron":
        raise DeployError(f"the artifact was compiled for {backend}, which {instance_type} cannot accelerate: "
                          "compile it with --backend neuron --target inf2 (or trn1)")
    if backend == "neuron" and not neuron_instance:
        raise DeployError(f"a Neuron artifact needs an Inferentia2 or Trainium instance, not {instance_type}")
    runs_on = family.target if family else None
    if backend == "neuron" and target in platforms.TARGETS and runs_on and not platforms.same_generation(target,
                                                                                                         runs_on):
        raise DeployError(f"the artifact was compiled for {target}, which does not run on {instance_type}: "
                          f"recompile it with --target {runs_on}")
    image = image_versions(uri)
    if image is None:
        return [f"{uri} does not follow the DLC tag pattern: the artifact's versions were not checked against it"]
    notes = []
    framework = versions.get("torch-neuronx") if backend == "neuron" else versions.get("torch")
    if _minor(framework) is None:
        notes.append(f"the manifest records no {'torch-neuronx' if backend == 'neuron' else 'torch'} version: "
                     "not checked against the image")
    elif _minor(framework) != _minor(image["torch"]):
        raise DeployError(f"the artifact was compiled with {'torch-neuronx' if backend == 'neuron' else 'torch'} "
                          f"{framework}, the image has torch {image['torch']}: pass --image with a matching tag, or "
                          "recompile on that SDK")
    release = platforms.release_of_sdk(image["sdk"])
    if backend == "neuron" and release is None:
        notes.append(f"neuronx-cc of SDK {image['sdk']} is not known here: {versions.get('neuronx-cc')} not checked")
    elif backend == "neuron" and versions.get("neuronx-cc") != release.neuronx_cc:
        # An artifact bound for an image is compiled with that image's compiler (NEURON.md, Installing).
        raise DeployError(f"the artifact was compiled with neuronx-cc {versions.get('neuronx-cc')}, and SDK "
                          f"{image['sdk']}'s image ships {release.neuronx_cc}: recompile it with that compiler, in "
                          f"a venv made with: {platforms.pip_install(release.version)}")
    return notes


def package_model(artifact_dir: Path, out: Path, entry_point: Path | None = None) -> Path:
    """model.tar.gz: artifact/ (checked first), code/inference.py, code/neuron_encoder/ (no caches)."""
    artifact_dir = Path(artifact_dir)
    manifest = artifact.read_manifest(artifact_dir)
    artifact.verify_checksums(artifact_dir, manifest)
    package_dir = Path(__file__).resolve().parents[1]
    entry_point = entry_point or package_dir.parent / "deploy" / "sagemaker" / "inference.py"
    if not entry_point.is_file():
        raise DeployError(f"{entry_point} not found: pass --entry-point with deploy/sagemaker/inference.py "
                          "from a neuron-encoder checkout")
    skip_caches = (lambda info: None if "__pycache__" in Path(info.name).parts or info.name.endswith(".pyc")
                   else info)
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")  # renamed into place when complete, as artifacts are
    try:
        with tarfile.open(partial, mode="w:gz") as tar:
            tar.add(artifact_dir, arcname="artifact")
            tar.add(entry_point, arcname="code/inference.py")
            tar.add(package_dir, arcname="code/neuron_encoder", filter=skip_caches)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


@dataclass(frozen=True)
class Endpoint:
    """What `deploy endpoint` creates: model, endpoint config and endpoint share the name."""

    name: str
    instance_type: str
    image: str
    role_arn: str
    model_data: str  # s3://.../model.tar.gz
    environment: dict[str, str]
    initial_instances: int = 1
    tags: tuple[dict[str, str], ...] = ()


def container_environment(manifest: dict[str, Any], instance_type: str) -> dict[str, str]:
    """The handler module, TorchServe's response timeout, and for Neuron one TorchServe worker per
    NeuronCore, each holding one core."""
    environment = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                   "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(MODEL_SERVER_TIMEOUT_S)}
    cores = platforms.instance_cores(instance_type)
    if manifest.get("backend") == "neuron" and cores:
        environment.update({"NEURON_RT_NUM_CORES": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": str(cores)})
    return environment


def model_params(endpoint: Endpoint) -> dict[str, Any]:
    return {"ModelName": endpoint.name, "ExecutionRoleArn": endpoint.role_arn,
            "PrimaryContainer": {"Image": endpoint.image, "ModelDataUrl": endpoint.model_data,
                                 "Environment": endpoint.environment},
            "Tags": list(endpoint.tags)}


def endpoint_config_params(endpoint: Endpoint) -> dict[str, Any]:
    return {"EndpointConfigName": endpoint.name, "Tags": list(endpoint.tags), "ProductionVariants": [{
        "VariantName": VARIANT, "ModelName": endpoint.name, "InstanceType": endpoint.instance_type,
        "InitialInstanceCount": endpoint.initial_instances, "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": STARTUP_HEALTH_CHECK_S,
        "ModelDataDownloadTimeoutInSeconds": MODEL_DOWNLOAD_S}]}


def create_endpoint(aws: Aws, endpoint: Endpoint, wait: bool = True, echo: Echo = print) -> dict[str, Any]:
    """Model, endpoint config, endpoint; then wait until InService, or say why it failed."""
    created = []
    try:
        aws.call("sagemaker", "create_model", model_params(endpoint))
        created.append("model")
        aws.call("sagemaker", "create_endpoint_config", endpoint_config_params(endpoint))
        created.append("endpoint config")
        aws.call("sagemaker", "create_endpoint", {"EndpointName": endpoint.name, "EndpointConfigName": endpoint.name,
                                                  "Tags": list(endpoint.tags)})
        created.append("endpoint")
        echo(f"endpoint {endpoint.name}: {'would be created' if aws.dry_run else 'creating'} on "
             f"{endpoint.instance_type} ({endpoint.image})")
        if wait:
            wait_in_service(aws, endpoint.name)
    except DeployError as exc:
        if not created:
            raise
        raise DeployError(f"{exc}; created: {', '.join(created)} {endpoint.name}; remove with: neuron-encoder "
                          f"deploy delete {endpoint.name} --region {aws.region}") from None
    if aws.dry_run:  # nothing was created, so there is nothing to describe
        return {"EndpointName": endpoint.name, "EndpointStatus": "not created (dry run)"}
    return aws.call("sagemaker", "describe_endpoint", {"EndpointName": endpoint.name}, read_only=True)


def wait_in_service(aws: Aws, name: str, delay: int = 30, max_attempts: int = 120) -> None:
    """botocore's endpoint_in_service waiter (up to an hour); a failure shows SageMaker's FailureReason."""
    try:
        aws.wait("sagemaker", "endpoint_in_service", {"EndpointName": name}, delay=delay, max_attempts=max_attempts)
    except DeployError:
        described = aws.call("sagemaker", "describe_endpoint", {"EndpointName": name}, read_only=True)
        reason = described.get("FailureReason") or f"status {described.get('EndpointStatus')}"
        hint = (" (pass --image with a tag that exists in this region: see the Neuron DLC list)"
                if "image" in reason.lower() else "")
        raise DeployError(f"endpoint {name} did not come up: {reason}{hint}; logs: CloudWatch "
                          f"/aws/sagemaker/Endpoints/{name}") from None


def invocation_body(texts: list[str], normalize: bool = True, truncate: bool = False, query: str | None = None,
                    scores: bool = False, raw_scores: bool = False) -> dict[str, Any]:
    """The /invocations JSON the endpoint's task takes (the server's and the handler's one contract):
    an embedder's {"inputs", "normalize", "truncate"}; a classifier's /predict body (`scores`); a
    reranker's /rerank body (a `query` and its texts)."""
    if query is not None:
        return {"query": query, "texts": texts, "truncate": truncate, "raw_scores": raw_scores}
    if scores or raw_scores:
        return {"inputs": texts, "truncate": truncate, "raw_scores": raw_scores}
    return {"inputs": texts, "normalize": normalize, "truncate": truncate}


def invoke(aws: Aws, name: str, body: dict[str, Any]) -> Any:
    """POST an /invocations JSON body through sagemaker-runtime; a model error shows the container's message."""
    body = json.dumps(body)
    try:
        response = aws.call("sagemaker-runtime", "invoke_endpoint", {
            "EndpointName": name, "ContentType": "application/json", "Accept": "application/json", "Body": body},
            read_only=True)
    except AwsCallError as exc:
        if exc.code != "ModelError":
            raise
        raise DeployError(f"endpoint {name} answered with an error: {exc}") from None
    payload = response["Body"].read()
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        raise DeployError(f"endpoint {name} did not answer JSON: {payload[:200]!r}") from None


def delete_endpoint(aws: Aws, name: str) -> list[str]:
    """Endpoint, endpoint config, model (scaling is deregistered first, by the caller); skips what is gone."""
    steps = [("delete_endpoint", {"EndpointName": name}), ("delete_endpoint_config", {"EndpointConfigName": name}),
             ("delete_model", {"ModelName": name})]
    return aws.delete_each("sagemaker", steps, {"ValidationException"}, name)  # SageMaker's "no such name"


def default_name(manifest: dict[str, Any]) -> str:
    """neuron-encoder-<model>-<time>: SageMaker names are 63 characters of letters, digits and hyphens."""
    model = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(manifest.get("model", {}).get("id", "model"))).name).strip("-")
    return f"neuron-encoder-{model[:30] or 'model'}-{utc_stamp()}"


@dataclass(frozen=True)
class Scaling:
    minimum: int = 1
    maximum: int = 4
    target: float | None = None  # invocations per instance per minute; None: from_bench, or no scaling
    from_bench: Path | None = None
    safety: float = autoscaling.SAFETY
    texts_per_request: int = 1


def deploy_endpoint(aws: Aws, artifact_dir: Path, instance_type: str, bucket: str, role_arn: str,
                    image: str | None = None, name: str | None = None, scaling: Scaling = Scaling(),
                    entry_point: Path | None = None, echo: Echo = print) -> dict[str, Any]:
    """Check, package, upload, create and wait, then register scaling; prints each decision."""
    manifest = artifact.read_manifest(artifact_dir)
    image = image or image_uri(aws.region or "")
    notes = check_compatibility(manifest, image, instance_type)
    if not (Path(artifact_dir) / "tokenizer").is_dir():
        notes.append(f"{artifact_dir} has no tokenizer/: the endpoint will answer text requests with a "
                     "'tokenizer' error (compile from a checkpoint that has one)")
    for note in notes:
        echo(f"note: {note}")
    target = scaling.target
    if target is None and scaling.from_bench is not None:
        sized = autoscaling.target_from_bench(scaling.from_bench, scaling.safety, scaling.texts_per_request)
        echo(f"scaling target: {sized.arithmetic}")
        target = sized.value
    name = name or default_name(manifest)
    run = Run(name, aws.caller_arn(), None)
    staging.check_bucket(aws, bucket)
    key = f"{staging.ROOT_PREFIX}/endpoints/{name}/model.tar.gz"
    with tempfile.TemporaryDirectory(prefix="neuron-encoder-model-") as tmp:
        archive = package_model(artifact_dir, Path(tmp) / "model.tar.gz", entry_point)
        echo(f"model.tar.gz: {archive.stat().st_size / 1e6:.1f} MB -> s3://{bucket}/{key}")
        staging.upload(aws, bucket, key, archive, run.tags)
    endpoint = Endpoint(name, instance_type, image, role_arn, f"s3://{bucket}/{key}",
                        container_environment(manifest, instance_type), scaling.minimum, tuple(run.tags))
    described = create_endpoint(aws, endpoint, echo=echo)
    if target is None:
        echo("no autoscaling: pass --target-invocations N or --from-bench RESULT.json to register it")
    else:
        try:
            autoscaling.register(aws, name, scaling.minimum, scaling.maximum, target)
        except DeployError as exc:
            raise DeployError(f"{exc}; the endpoint is up without scaling; remove it with: neuron-encoder deploy "
                              f"delete {name} --region {aws.region}") from None
        echo(f"autoscaling: {scaling.minimum}..{scaling.maximum} instances, target {target:g} invocations per "
             "instance per minute")
    echo(f"endpoint {name}: {described.get('EndpointStatus')}" +
         ("" if aws.dry_run else f"; try: neuron-encoder deploy invoke {name} 'hello'"))
    return described


def delete_all(aws: Aws, name: str, echo: Echo = print) -> list[str]:
    """Scaling first (a scalable target outliving its endpoint lingers), then endpoint, config, model."""
    done = autoscaling.deregister(aws, name) + delete_endpoint(aws, name)
    for line in done or [f"nothing named {name} to delete"]:
        echo(line)
    return done
