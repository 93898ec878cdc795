"""The platform table: families, cores, generations and SDK releases, and the shell's way to ask it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neuron_encoder import platforms


@pytest.mark.parametrize("instance_type, kind, arch, target", [
    ("inf2.xlarge", "neuron", "x86_64", "inf2"), ("ml.inf2.48xlarge", "neuron", "x86_64", "inf2"),
    ("trn1n.32xlarge", "neuron", "x86_64", "trn1n"), ("trn2u.48xlarge", "neuron", "x86_64", "trn2"),
    ("inf1.xlarge", "neuron", "x86_64", None), ("g5.xlarge", "gpu", "x86_64", None),
    ("g5g.xlarge", "gpu", "arm64", None), ("p4d.24xlarge", "gpu", "x86_64", None),
    ("gr6.4xlarge", "gpu", "x86_64", None),
    ("c7g.xlarge", "cpu", "arm64", None), ("c7gn.large", "cpu", "arm64", None), ("is4gen.large", "cpu", "arm64", None),
    ("a1.large", "cpu", "arm64", None), ("c7i.xlarge", "cpu", "x86_64", None),
    ("c7i-flex.large", "cpu", "x86_64", None),
    ("m5.large", "cpu", "x86_64", None),
])
def test_families(instance_type, kind, arch, target):
    family = platforms.family(instance_type)
    assert (family.kind, family.arch, family.target) == (kind, arch, target)
    assert platforms.target_of(instance_type) == target


@pytest.mark.parametrize("instance_type, quota_class", [("inf2.xlarge", "Inf"), ("trn2u.48xlarge", "Trn"),
                                                        ("g5g.xlarge", "G and VT"), ("vt1.3xlarge", "G and VT"),
                                                        ("p5.48xlarge", "P"), ("c7g.xlarge", "Standard")])
def test_the_vcpu_quota_class_follows_the_family(instance_type, quota_class):
    assert platforms.family(instance_type).quota_class == quota_class


@pytest.mark.parametrize("name", ["inf2", "", "INF2.xlarge", "inf2.xlarge.extra"])
def test_what_is_not_an_instance_type_answers_none(name):
    assert platforms.family(name) is None and platforms.target_of(name) is None


@pytest.mark.parametrize("instance_type, lnc, cores", [
    ("inf2.xlarge", 2, 2), ("ml.inf2.24xlarge", 2, 12), ("inf2.48xlarge", 2, 24), ("trn1.32xlarge", 2, 32),
    ("trn1.2xlarge", 1, 2), ("trn2.48xlarge", 2, 64), ("trn2.48xlarge", 1, 128), ("trn2.3xlarge", 2, 4),
    ("inf2.96xlarge", 2, None), ("c7i.xlarge", 2, None),
])
def test_cores_per_instance_know_lnc(instance_type, lnc, cores):
    """logical-neuroncore-config.rst: trn2.48xlarge shows 64 cores at LNC=2 and 128 at LNC=1; inf2 has no LNC."""
    assert platforms.instance_cores(instance_type, lnc) == cores


def test_generations():
    assert platforms.same_generation("inf2", "trn1") and platforms.same_generation("trn1n", "inf2")
    assert not platforms.same_generation("inf2", "trn2")


def test_releases_pair_the_compiler_with_its_image():
    """update-dlami.rst and the 2.31 DLC ship neuronx-cc 2.26.6360.0; the 2.32 setup guide installs 2.27.5334.0."""
    sagemaker = platforms.RELEASES[platforms.SAGEMAKER]
    assert sagemaker.pins == "neuronx-cc==2.26.6360.0 torch-neuronx==2.9.0.2.15.32035"
    assert [tag.split("-sdk")[1][:6] for tag in sagemaker.container_tags] == ["2.31.0", "2.31.1"]
    assert platforms.release_of_sdk("2.31.1") is sagemaker and platforms.release_of_sdk("2.30.0") is None
    assert platforms.RELEASES["2.32"].dlami_venv is None and platforms.RELEASES["2.32"].container_tags == ()
    assert platforms.pip_install("2.31", "python3") == ("python3 -m pip install neuronx-cc==2.26.6360.0 "
                                                         "torch-neuronx==2.9.0.2.15.32035 "
                                                         "--extra-index-url=https://pip.repos.neuron.amazonaws.com")


def test_a_bare_python_can_ask_for_the_pins():
    """scripts/neuron-check.sh asks before any venv exists: the file runs alone, importing nothing of ours."""
    script = Path(platforms.__file__)
    run = lambda *args: subprocess.run([sys.executable, "-I", str(script), *args], capture_output=True, text=True)
    assert run("pins").stdout.strip() == platforms.RELEASES[platforms.LATEST].pins
    assert run("pins", "2.31").stdout.strip() == platforms.RELEASES["2.31"].pins
    refused = run("pins", "2.99")
    assert refused.returncode == 1 and "usage: platforms.py pins [2.31|2.32]" in refused.stderr
