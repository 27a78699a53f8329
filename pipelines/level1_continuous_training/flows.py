"""Level 1's entry file for Prefect deployments (prefect.yaml's ``entrypoint:`` lines).

The flows themselves live in the package, ``fraud_detection.orchestration.flows``, so the
wheel runs them too (``fraud ct run``, ``fraud score``, ``fraud monitor run``). This file
names them for ``prefect deploy`` and for the worker.

A deployed run starts in a clone of the deployed commit (prefect.yaml's pull step). That
clone's own ``src/`` goes first on the path, so the package the flows come from is the
released code too, not whatever the worker's environment holds (the dependencies still
come from that environment).
"""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if (_SRC / "fraud_detection" / "__init__.py").is_file() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from fraud_detection.orchestration.flows import (  # noqa: E402  (after the path above)
    batch_scoring_flow,
    ct_flow,
    monitoring_flow,
    new_data_sensor,
    signal_trigger,
)

__all__ = ["batch_scoring_flow", "ct_flow", "monitoring_flow", "new_data_sensor", "signal_trigger"]
