"""AWS calls as data: one client per service, every call a parameters dict, every failure one line.

Each call is built as a dict first and then sent, so `--dry-run` prints exactly what would be sent
(and creates nothing), tests can assert on the dicts, and every botocore error is turned into one
DeployError saying what to do, in one place.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..errors import DeployError

TOOL = "neuron-encoder"
INSTALL_HINT = "boto3 is not installed: pip install 'neuron-encoder[aws]'"
POLICY_HINT = "README.md, 'Deploy on AWS', lists the minimal IAM policy"

Echo = Callable[[str], None]


class AwsCallError(DeployError):
    """A call AWS refused; `code` is AWS's error code, for callers that handle some of them."""

    def __init__(self, message: str, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation


class Placeholder(str):
    """What a creating call returns under --dry-run: any key or index gives a named placeholder.

    It is a string, so later calls built from it (a group id, an ARN) print as "<dry-run: ...>".
    """

    def __new__(cls, path: str) -> Placeholder:
        placeholder = super().__new__(cls, f"<dry-run: {path}>")
        placeholder.path = path
        return placeholder

    def __getitem__(self, key: Any) -> Placeholder:  # type: ignore[override]
        return Placeholder(f"{self.path}.{key}" if isinstance(key, str) else f"{self.path}[{key}]")


@dataclass(frozen=True)
class Run:
    """One deployment run: its id, who started it, when it expires, and the tags that find it."""

    run_id: str
    owner: str
    expires_at: datetime | None  # None: runs until deleted (an endpoint)
    results: str = ""  # s3://bucket/prefix/ the run writes to, so collect finds it from the tags

    @staticmethod
    def new(owner: str, max_hours: float, results: str = "", now: datetime | None = None) -> Run:
        now = now or datetime.now(timezone.utc)
        suffix = os.urandom(2).hex()
        return Run(f"ne-{now:%Y%m%d-%H%M%S}-{suffix}", owner, now + timedelta(hours=max_hours), results)

    @property
    def tags(self) -> list[dict[str, str]]:
        """tool, run id, owner, expires-at (and where results go): on everything the run creates."""
        tags = [{"Key": "tool", "Value": TOOL}, {"Key": "run-id", "Value": self.run_id},
                {"Key": "owner", "Value": self.owner[:256]}]
        if self.expires_at is not None:
            tags.append({"Key": "expires-at", "Value": self.expires_at.isoformat(timespec="seconds")})
        return tags + ([{"Key": "results", "Value": self.results}] if self.results else [])

    def cleanup_hint(self, region: str) -> str:
        return f"neuron-encoder deploy cleanup {self.run_id} --region {region}"


def printable(params: dict[str, Any]) -> str:
    """The parameters as JSON, as sent; a body shows as its size or its file, not its bytes."""
    def shown(value: Any) -> str:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return f"<file {value.name}>" if hasattr(value, "read") and hasattr(value, "name") else str(value)
    return json.dumps(params, indent=2, default=shown)


def parse_expiry(value: str) -> datetime | None:
    """An expires-at tag back into a datetime; None for a tag someone edited into nonsense."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class Aws:
    """A region, its clients (made once each), and the dry-run switch every call goes through."""

    region: str | None = None
    dry_run: bool = False
    echo: Echo = print
    session: Any = None
    planned: list[tuple[str, str, dict]] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.session is None:
            try:
                import boto3
            except ImportError:
                raise DeployError(INSTALL_HINT) from None
            self.session = boto3.Session(region_name=self.region)
        self.region = self.region or self.session.region_name
        if not self.region:
            raise DeployError("no AWS region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)")
        known = set(self.session.get_available_regions("ec2"))
        for partition in ("aws-cn", "aws-us-gov"):
            known |= set(self.session.get_available_regions("ec2", partition_name=partition))
        if known and self.region not in known:
            raise DeployError(f"unknown AWS region {self.region!r}: pass --region with a region name such as "
                              "us-east-1 or us-west-2 (Inferentia2 and Trainium are not in every region)")

    @property
    def partition(self) -> str:
        return self.session.get_partition_for_region(self.region)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.region)
        return self._clients[service]

    def call(self, service: str, operation: str, params: dict[str, Any], *, read_only: bool = False) -> dict:
        """Send `params` to service.operation; under dry-run print them, and send only read-only calls."""
        if self.dry_run:
            self.planned.append((service, operation, params))
            label = "read-only, sent" if read_only else "not sent"
            self.echo(f"[dry-run] {service}.{operation} ({label})\n{printable(params)}")
            if not read_only:
                return Placeholder(f"{service}.{operation}")
        return self.send(service, operation, params)

    def send(self, service: str, operation: str, params: dict[str, Any]) -> dict:
        return self._guarded(service, operation, params,
                             lambda: getattr(self.client(service), operation)(**params))

    def paginate(self, service: str, operation: str, params: dict[str, Any], key: str) -> list[dict]:
        """Every item under `key` across all pages of a read-only listing call."""
        if self.dry_run:
            self.planned.append((service, operation, params))
            self.echo(f"[dry-run] {service}.{operation} (read-only, sent)\n{printable(params)}")
        pages = lambda: list(self.client(service).get_paginator(operation).paginate(**params))  # noqa: E731
        return [item for page in self._guarded(service, operation, params, pages) for item in page.get(key, [])]

    def _guarded(self, service: str, operation: str, params: dict[str, Any], send: Callable[[], Any]) -> Any:
        from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError,
                                         ParamValidationError, PartialCredentialsError)
        try:
            return send()
        except (NoCredentialsError, PartialCredentialsError):
            raise DeployError("no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_PROFILE "
                              "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
        except EndpointConnectionError:
            raise DeployError(f"cannot reach {service} in region {self.region}: check the region name "
                              "(--region) and this machine's network") from None
        except ParamValidationError as exc:
            raise DeployError(f"invalid parameters for {service}.{operation}: {exc}") from None
        except ClientError as exc:
            raise translate(exc, service, operation, params, self.region) from None
        except BotoCoreError as exc:
            raise DeployError(f"{service}.{operation} failed: {exc}") from None

    def wait(self, service: str, waiter: str, params: dict[str, Any], delay: int, max_attempts: int) -> None:
        """A botocore waiter (never a sleep loop); a failure names what it waited for and why."""
        if self.dry_run:
            operation = self.client(service).get_waiter(waiter).config.operation  # what the waiter would poll
            self.planned.append((service, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower(), params))
            self.echo(f"[dry-run] would wait: {service} {waiter} {printable(params)}")
            return
        from botocore.exceptions import WaiterError
        try:
            self.client(service).get_waiter(waiter).wait(
                **params, WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts})
        except WaiterError as exc:
            reason = (exc.last_response or {}).get("Error", {}).get("Message") or str(exc)
            raise DeployError(f"{service} {waiter} did not happen: {reason}") from None

    def delete_each(self, service: str, steps: list[tuple[str, dict[str, Any]]], gone: set[str],
                    label: str) -> list[str]:
        """Run deleting calls in order, skipping those AWS answers with a `gone` code (already deleted)."""
        done = []
        for operation, params in steps:
            try:
                self.call(service, operation, params)
            except AwsCallError as exc:
                if exc.code not in gone:
                    raise
                continue
            done.append(f"{service} {operation} {label}")
        return done

    def caller_arn(self) -> str:
        """Who is running this (the owner tag); the first call, so bad credentials stop us before anything exists."""
        return self.call("sts", "get_caller_identity", {}, read_only=True)["Arn"]


_CREDENTIAL_CODES = {"UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure", "SignatureDoesNotMatch",
                     "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "RequestExpired"}


def translate(exc: Any, service: str, operation: str, params: dict[str, Any], region: str) -> AwsCallError:
    """One botocore ClientError -> one line saying what to do."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code in _CREDENTIAL_CODES:
        text = f"AWS rejected the credentials ({code}): refresh them (`aws sso login`, `aws configure`) and retry"
    elif "iam:PassRole" in message:
        role = params.get("ExecutionRoleArn") or _arn_in(message) or "the role"
        text = (f"you may not pass {role} to {service}: add iam:PassRole on it to your IAM user or role "
                f"({POLICY_HINT})")
    elif code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation") or code.startswith("AccessDenied"):
        text = (f"not allowed to call {service}:{_action(operation)} in {region}: add it to your IAM policy "
                f"({POLICY_HINT})")
    elif code == "OptInRequired":
        text = f"region {region} is not enabled for this account: enable it in the AWS console or pick another --region"
    elif code.startswith("InvalidAMIID"):
        image = params.get("ImageId") or ",".join(params.get("ImageIds", []))
        text = (f"AMI {image} does not exist in {region}: pass --ami with an AMI of this region, "
                "or fix the SSM parameter path")
    else:
        text = f"{service}.{operation} failed ({code}): {message}"
    return AwsCallError(text, code=code, operation=operation)


def _action(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def _arn_in(message: str) -> str | None:
    match = re.search(r"arn:aws[\w-]*:iam::\d+:role/[\w+=,.@/-]+", message)
    return match.group(0) if match else None
