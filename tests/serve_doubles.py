"""TEST DOUBLE of a replica's model call, for the server's fault tests: the real call
(serve.replicas.run_batch), except that a batch holding GATE_ID waits while the gate file is absent,
and a batch holding POISON_ID raises, as a backend failure would. Both ids are unused vocabulary
entries ([unused6], [unused8] in BERT's vocabulary), so real text never holds them.

Run as the server: python -m tests.serve_doubles '<ServeSettings as JSON>' [GATE_FILE]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from neuron_encoder.errors import run_main
from neuron_encoder.serve.server import serve
from neuron_encoder.serve.replicas import run_batch
from neuron_encoder.serve.settings import ServeSettings

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
            waiting.unlink()
        return run_batch(model, rows)
    return run


def main() -> None:
    settings = json.loads(sys.argv[1])
    gate = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("compile_options", "cors_allow_origin"):
        settings.pop(name, None)
    run_main(lambda: serve(ServeSettings(**settings), run=faulty(gate)))


if __name__ == "__main__":
    main()
