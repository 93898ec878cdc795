"""TEST DOUBLE of a replica's model call, for the server's fault tests: the real call
(serve.replicas.run_batch), except that a batch holding GATE_ID waits while the gate file is absent,
and a batch holding POISON_ID raises, as a backend failure would. Both ids are unused vocabulary
entries ([unused6], [unused8] in BERT's vocabulary), so real text never holds them.

Run as the server: python -m tests.serve_doubles '<ServeSettings as JSON>' [GATE_FILE]. One process unless
the settings give "workers"; with several, each worker is this module too, with no arguments
(workers.worker_main), and the gate and the poison act in every worker (GATE_VARIABLE names the gate). With SERVE_DOUBLES_NEURON_HOST set
("inf2.24xlarge:6": instance type, devices), the server and every worker see that Neuron host through
the torch_neuronx TEST DOUBLE (tests/neuron_double.py), as the neuron_host fixture shows it to a test.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from neuron_encoder.errors import run_main
from neuron_encoder.serve.replicas import run_batch
from neuron_encoder.serve.settings import ServeSettings
from neuron_encoder.serve.workers import serve, worker_main

NEURON_HOST_VARIABLE = "SERVE_DOUBLES_NEURON_HOST"
GATE_VARIABLE = "SERVE_DOUBLES_GATE"

GATE_ID = 7
POISON_ID = 9


def faulty(gate: Path | None):
    """run_batch with the gate and the poison; while a batch waits at the gate, GATE.waiting exists."""
    def run(model, rows):
        if any(POISON_ID in ids for ids in rows):
            raise RuntimeError("injected backend failure")
        if gate is not None and any(GATE_ID in ids for ids in rows):
            waiting = gate.with_suffix(".waiting")
            waiting.touch()
            while not gate.exists():
                time.sleep(0.002)
            waiting.unlink(missing_ok=True)  # several workers may wait at one gate
        return run_batch(model, rows)
    return run


def pretend_neuron_host() -> None:
    """This process on the Neuron host NEURON_HOST_VARIABLE names, for good (the conftest's neuron_host)."""
    spec = os.environ.get(NEURON_HOST_VARIABLE)
    if not spec:
        return
    import pytest
    from neuron_encoder import hardware, platforms
    from tests.neuron_double import install
    instance, devices = spec.split(":")
    patch = pytest.MonkeyPatch()
    patch.setattr(hardware, "ec2_instance_type", lambda: instance)
    for probe, value in (("neuron_device_count", int(devices)), ("has_neuron_devices", True),
                         ("neuron_driver_loaded", True), ("neuron_ls_core_count", None), ("is_cuda_available", False)):
        patch.setattr(hardware, probe, lambda value=value: value)
    install(patch, devices=int(devices), platform=platforms.target_of(instance))


def main() -> None:
    pretend_neuron_host()
    if len(sys.argv) == 1:  # a worker of several
        worker_main(faulty(Path(os.environ[GATE_VARIABLE]) if os.environ.get(GATE_VARIABLE) else None))
        return
    settings = json.loads(sys.argv[1])
    settings.setdefault("workers", 1)
    gate = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    if gate is not None:
        os.environ[GATE_VARIABLE] = str(gate)  # for the workers
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("compile_options", "cors_allow_origin"):
        settings.pop(name, None)
    run_main(lambda: serve(ServeSettings(**settings), run=faulty(gate), worker_module="tests.serve_doubles"))


if __name__ == "__main__":
    main()
