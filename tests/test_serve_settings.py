"""Server settings: checked before anything loads, and SageMaker's container conventions."""

from __future__ import annotations

import inspect

import pytest

from neuron_encoder import cli
from neuron_encoder.errors import ConfigError
from neuron_encoder.serve import settings as serve_settings
from neuron_encoder.serve.settings import ServeSettings, resolve


def test_defaults_bind_loopback_with_tei_limits():
    s = ServeSettings()
    assert (s.host, s.port, s.model_spec) == ("127.0.0.1", 8080, "minilm")
    assert (s.max_batch_tokens, s.max_client_batch_size, s.max_concurrent_requests, s.payload_limit) == (
        16384, 32, 512, 2_000_000)
    assert s.max_batch_delay_ms == 0 and s.api_key is None and s.cors_allow_origin == ()


@pytest.mark.parametrize("changes, words", [
    ({"port": 0}, "--port must be a positive integer"),
    ({"port": 70000}, "not a TCP port"),
    ({"max_concurrent_requests": 4, "max_client_batch_size": 8}, "could never be admitted"),
    ({"max_batch_delay_ms": -1}, "--max-batch-delay-ms must be >= 0"),
    ({"request_timeout_ms": 0}, "--request-timeout-ms must be positive"),
    ({"replicas": 0}, "--replicas must be a positive integer"),
    ({"artifact": "a", "model": "minilm"}, "not both"),
    ({"api_key": "  "}, "--api-key is empty"),
])
def test_bad_settings_are_config_errors_naming_the_option(changes, words):
    with pytest.raises(ConfigError, match=words):
        ServeSettings(**changes)


def test_sagemaker_binds_every_interface_and_reads_the_model_directory(tmp_path):
    (tmp_path / "artifact").mkdir()
    s = resolve(ServeSettings(), {"SAGEMAKER_BIND_TO_PORT": "9000", "SM_MODEL_DIR": str(tmp_path)})
    assert (s.host, s.port, s.sagemaker, s.artifact) == ("0.0.0.0", 9000, True, str(tmp_path / "artifact"))
    s = resolve(ServeSettings(sagemaker=True), {})
    assert (s.host, s.port, s.artifact) == ("0.0.0.0", 8080, "/opt/ml/model")
    assert resolve(ServeSettings(sagemaker=True, artifact="mine"), {}).artifact == "mine"
    assert resolve(ServeSettings(), {}).host == "127.0.0.1"  # not a container: loopback only
    with pytest.raises(ConfigError, match="SAGEMAKER_BIND_TO_PORT='x'"):
        resolve(ServeSettings(), {"SAGEMAKER_BIND_TO_PORT": "x"})


def test_the_api_key_from_the_option_a_file_or_the_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    env = {"NEURON_ENCODER_API_KEY": "from-env"}
    assert resolve(ServeSettings(api_key="given"), env, str(key_file)).api_key == "given"
    assert resolve(ServeSettings(), env, str(key_file)).api_key == "from-file"
    assert resolve(ServeSettings(), env).api_key == "from-env"
    assert resolve(ServeSettings(), {}).api_key is None
    with pytest.raises(ConfigError, match="cannot read --api-key-file"):
        resolve(ServeSettings(), {}, str(tmp_path / "missing"))


def test_the_command_line_leaves_every_default_to_the_settings(monkeypatch):
    """An option not given is None (a flag: off), so ServeSettings holds each default once."""
    parameters = inspect.signature(cli.serve).parameters
    defaults = ServeSettings()
    for name, parameter in parameters.items():
        default = parameter.default.default
        if hasattr(defaults, name) and name != "cors_allow_origin":
            assert default is None or default is False is getattr(defaults, name), name
    from typer.testing import CliRunner
    from neuron_encoder.serve import workers
    seen = []
    monkeypatch.setattr(workers, "serve", lambda settings, api_key_file=None: seen.append(settings))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen == [ServeSettings()] and seen[0].batch_sizes == serve_settings.DEFAULT_BATCH_SIZES
