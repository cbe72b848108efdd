"""Run an exported policy with ONNX Runtime alone and compare it with the outputs it should give.

``python -m reservoir_dqn.release.onnx_check POLICY.onnx EXPECTED.npz`` loads ``observation``,
``action`` (the index torch's policy chose) and ``q_values`` from the ``.npz`` file, runs the
ONNX policy on every observation and prints one JSON line: how many observations, how many
got torch's action, the largest Q-value difference, and whether torch was imported. This
module imports numpy and onnxruntime only, so the check runs as a control room would run the
file: without PyTorch (:mod:`reservoir_dqn.commands.export` runs it in a process of its own).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
import onnxruntime


def compare(policy: str, expected: str) -> dict[str, object]:
    """The ONNX policy's outputs against the expected ones (see the module's docstring)."""
    data = np.load(expected)
    session = onnxruntime.InferenceSession(policy, providers=["CPUExecutionProvider"])
    value, q_values = session.run(None, {"observation": data["observation"]})
    actions = np.argmax(q_values, axis=-1)
    return {
        "observations": len(q_values),
        "same_action": int((actions == data["action"]).sum()),
        "same_value": int((value == data["value"]).sum()),
        "max_q_error": float(np.abs(q_values - data["q_values"]).max()),
        "torch_imported": "torch" in sys.modules,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m reservoir_dqn.release.onnx_check POLICY.onnx EXPECTED.npz", file=sys.stderr)
        return 2
    print(json.dumps(compare(*args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
