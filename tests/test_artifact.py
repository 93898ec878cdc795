"""Artifact integrity: atomic builds, checksums, the manifest."""

from __future__ import annotations

import json

import pytest
import torch

from neuron_encoder import artifact
from neuron_encoder.files import write_json_atomic
from neuron_encoder.errors import ArtifactError


def test_building_renames_into_place_only_with_a_manifest(tmp_path):
    final = tmp_path / "art"
    with artifact.building(final, force=False) as temp:
        assert not final.exists() and temp.parent == tmp_path
        (temp / "data.bin").write_bytes(b"abc")
        write_json_atomic(temp / artifact.MANIFEST, {"format": 1, "files": artifact.file_checksums(temp)})
    assert (final / "data.bin").read_bytes() == b"abc"
    assert list(tmp_path.iterdir()) == [final]


def test_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"):
        with artifact.building(final, force=False) as temp:
            (temp / "data.bin").write_bytes(b"abc")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_needs_force_and_is_kept_without_it(tmp_path):
    final = tmp_path / "art"
    final.mkdir()
    (final / "precious.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="--force"):
        with artifact.building(final, force=False):
            pass
    assert (final / "precious.txt").read_text() == "keep me"


def test_stale_partials_are_cleared(tmp_path):
    stale = tmp_path / ".partial-art-xyz"
    stale.mkdir()
    with artifact.building(tmp_path / "art", force=False) as temp:
        write_json_atomic(temp / artifact.MANIFEST, {"format": 1, "files": {}})
    assert not stale.exists()


def test_checksums_detect_changed_missing_and_extra_files(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    manifest = {"files": artifact.file_checksums(tmp_path)}
    artifact.verify_checksums(tmp_path, manifest)
    (tmp_path / "a").write_bytes(b"changed")
    (tmp_path / "b").unlink()
    (tmp_path / "c").write_bytes(b"3")
    with pytest.raises(ArtifactError, match=r"changed: a; missing: b; not in the manifest: c"):
        artifact.verify_checksums(tmp_path, manifest)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        artifact.read_manifest(tmp_path)
    (tmp_path / artifact.MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json: not JSON"):
        artifact.read_manifest(tmp_path)
    (tmp_path / artifact.MANIFEST).write_text(json.dumps({"format": 99}))
    with pytest.raises(ArtifactError, match="format 99"):
        artifact.read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="not a compiled-artifact directory"):
        artifact.read_manifest(tmp_path / "nope")


def test_weights_hash_changes_with_any_weight(tiny_model):
    before = artifact.weights_hash(tiny_model)
    assert artifact.weights_hash(tiny_model) == before
    with torch.no_grad():
        tiny_model.layers[1].feed_forward.down.bias[3] += 1e-6
    assert artifact.weights_hash(tiny_model) != before


def test_cache_key_is_canonical():
    assert artifact.cache_key({"a": 1, "b": [1, 2]}) == artifact.cache_key({"b": [1, 2], "a": 1})
    assert artifact.cache_key({"a": 1}) != artifact.cache_key({"a": 2})
