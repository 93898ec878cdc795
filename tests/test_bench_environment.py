"""The environment record. The EC2 metadata probe is tested with a fake opener and a loopback server;
no test sends anything to the real metadata address.
"""

from __future__ import annotations

import http.client
import io
import socket
import subprocess
import threading
from pathlib import Path
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from neuron_encoder import hardware
from neuron_encoder.bench import environment
from neuron_encoder.bench.environment import PACKAGES, collect_environment, ec2_metadata

REAL_DIRECT_OPENER = environment._direct_opener


class FakeResponse(io.BytesIO):
    """Enough of urllib's response: a context manager with read()."""


class FakeOpener:
    """Answers like IMDSv2 and records each request and the timeout it was given."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls: list[tuple[str, str, dict, float]] = []

    def __call__(self, request, timeout):
        headers = {k.lower(): v for k, v in request.header_items()}
        self.calls.append((request.get_method(), request.full_url, headers, timeout))
        path = request.full_url.split("169.254.169.254", 1)[-1]
        if path not in self.answers:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", None, None)
        return FakeResponse(self.answers[path].encode())


IMDS_ANSWERS = {
    "/latest/api/token": "TOKEN-123",
    "/latest/meta-data/instance-type": "inf2.xlarge",
    "/latest/meta-data/placement/region": "us-east-2",
}


@pytest.fixture(autouse=True)
def no_real_imds(monkeypatch):
    """Any probe that is not given an opener gets one that fails the test instead of leaving the machine."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the real EC2 metadata service")

    monkeypatch.setattr(environment, "_direct_opener", lambda: refuse)
    monkeypatch.delenv(environment.NO_IMDS_ENV, raising=False)


def test_imdsv2_token_then_metadata():
    opener = FakeOpener(IMDS_ANSWERS)
    assert ec2_metadata(opener=opener) == {"instance_type": "inf2.xlarge", "region": "us-east-2"}
    (method0, url0, headers0, _), (method1, url1, headers1, _), (_, url2, headers2, _) = opener.calls
    assert (method0, url0) == ("PUT", "http://169.254.169.254/latest/api/token")
    assert headers0["x-aws-ec2-metadata-token-ttl-seconds"]
    assert (method1, url1) == ("GET", "http://169.254.169.254/latest/meta-data/instance-type")
    assert headers1["x-aws-ec2-metadata-token"] == "TOKEN-123"
    assert url2.endswith("/latest/meta-data/placement/region")
    assert headers2["x-aws-ec2-metadata-token"] == "TOKEN-123"


def test_every_request_shares_one_small_time_budget():
    opener = FakeOpener(IMDS_ANSWERS)
    ec2_metadata(opener=opener, timeout_s=0.3)
    timeouts = [call[3] for call in opener.calls]
    assert all(0 < t <= 0.3 for t in timeouts)
    assert timeouts == sorted(timeouts, reverse=True)


@pytest.mark.parametrize("error", [urllib.error.URLError("no route"), TimeoutError("timed out"),
                                   ConnectionRefusedError(), http.client.BadStatusLine("garbage")])
def test_off_ec2_gives_none(error):
    def failing(request, timeout):
        raise error

    assert ec2_metadata(opener=failing) == {"instance_type": None, "region": None}


def test_token_refused_gives_none():
    assert ec2_metadata(opener=FakeOpener({})) == {"instance_type": None, "region": None}


def test_probe_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    opener = FakeOpener(IMDS_ANSWERS)
    assert ec2_metadata(opener=opener) == {"instance_type": None, "region": None}
    assert opener.calls == []


class FakeImdsHandler(BaseHTTPRequestHandler):
    """A loopback stand-in for IMDSv2: GETs need the token from the PUT."""

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._answer(200, "LOOPBACK-TOKEN")
        else:
            self._answer(400, "bad token request")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "LOOPBACK-TOKEN":
            self._answer(401, "unauthorized")
        elif self.path in IMDS_ANSWERS:
            self._answer(200, IMDS_ANSWERS[self.path])
        else:
            self._answer(404, "not found")

    def _answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_real_http_against_a_loopback_metadata_server(monkeypatch):
    monkeypatch.setattr(environment, "_direct_opener", REAL_DIRECT_OPENER)  # real HTTP, to 127.0.0.1 only
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImdsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        assert ec2_metadata(base_url=base_url, timeout_s=5.0) == {"instance_type": "inf2.xlarge", "region": "us-east-2"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_hardware_facts_come_from_the_hardware_probes(monkeypatch):
    monkeypatch.setattr(environment, "ec2_metadata", lambda: {"instance_type": None, "region": None})
    monkeypatch.setattr(hardware, "cpu_model", lambda: "AMD EPYC 7R13 Processor")
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 1)
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: None)
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: "inf2.xlarge")  # from DMI, no network
    monkeypatch.setattr(hardware, "neuron_ls_core_count", lambda: None)  # counted by the family table
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    monkeypatch.delenv("NEURON_RT_NUM_CORES", raising=False)
    env = collect_environment("x")
    assert env["cpu_model"] == "AMD EPYC 7R13 Processor"
    assert (env["neuron_devices"], env["neuron_cores"], env["neuron_sdk"]) == (1, 2, "available")
    assert env["instance_type"] == "inf2.xlarge"


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_of_a_repository(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("x")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-q", "-m", "one")
    assert environment._git_commit(tmp_path) == git(tmp_path, "rev-parse", "HEAD")
    assert len(environment._git_commit(tmp_path)) == 40
    assert environment._git_dirty(tmp_path) is False
    (tmp_path / "f.txt").write_text("changed")
    assert environment._git_dirty(tmp_path) is True


def test_git_commit_outside_a_repository_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert environment._git_commit(tmp_path) is None
    assert environment._git_dirty(tmp_path) is None


def test_collect_environment_records_machine_software_and_command(monkeypatch):
    monkeypatch.setattr(environment, "ec2_metadata", lambda: {"instance_type": "c6i.xlarge", "region": "us-east-1"})
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 3)
    monkeypatch.setattr(hardware, "neuron_ls_core_count", lambda: None)
    env = collect_environment("neuron-encoder bench --backend cpu", artifact_manifest_sha256="ab" * 32)
    assert env["instance_type"] == "c6i.xlarge"
    assert env["region"] == "us-east-1"
    assert env["neuron_devices"] == 3
    assert env["neuron_cores"] is None  # 3 devices on a host of no Neuron family, and no neuron-ls
    assert env["command"] == "neuron-encoder bench --backend cpu"
    assert env["artifact_manifest_sha256"] == "ab" * 32
    assert env["hostname"] == socket.gethostname()
    assert env["logical_cores"] >= 1
    assert env["memory_gib"] > 0
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["torch"]  # installed in the test environment
    assert env["python"].count(".") == 2


def test_git_commit_is_of_the_package_source_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    monkeypatch.chdir(tmp_path)  # not a repository
    package_dir = Path(hardware.__file__).resolve().parent
    assert collect_environment("x")["git_commit"] == environment._git_commit(package_dir)


def test_collect_environment_off_ec2_and_without_gpu(monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    monkeypatch.setattr(environment.hardware, "cuda_devices", lambda: None)
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: None)
    env = collect_environment("x")
    assert env["instance_type"] is None and env["region"] is None
    assert env["gpu"] is None
    assert env["artifact_manifest_sha256"] is None


def test_missing_packages_are_none(monkeypatch):
    monkeypatch.setattr(environment, "PACKAGES", ("torch", "surely-not-installed-package-xyz"))
    versions = environment._package_versions()
    assert versions["surely-not-installed-package-xyz"] is None
    assert versions["torch"]
