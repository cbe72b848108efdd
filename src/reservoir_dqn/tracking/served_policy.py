"""The registered model's code: the shipped policy's checked ONNX file, run by ONNX Runtime, as an MLflow pyfunc.

MLflow stores this file beside the ONNX file ("models from code") and runs it to load the
model, so a registered version holds no pickled class: loading or serving it needs MLflow,
ONNX Runtime, numpy and pandas, not this package and not PyTorch. ``mlflow models serve``
serves it as it is.

It takes one row per state, the observation's fields as named columns (the ONNX file's
metadata names them; the registered signature lists them), and returns per row the chosen
action in the environment's own units (the reservoir: ``release_hm3``, the release target in
hm3 per month; elsewhere ``action``, its index) and ``q_values``, every action's value.

A row with a field missing, not finite or outside the environment's observation space (the
bounds the export wrote in the file's metadata as ``observation_bounds``) is refused with
MLflow's invalid-input error (HTTP 400) naming it. A file exported before the bounds were
written is served without the bounds check.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel, PythonModelContext

ARTIFACT = "policy"  # the ONNX file's key among the model's artifacts


class OnnxPolicy(PythonModel):
    """The policy of the ONNX file logged as the artifact ``policy``."""

    def load_context(self, context: PythonModelContext) -> None:
        self.session = onnxruntime.InferenceSession(context.artifacts[ARTIFACT], providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.fields: list[str] = json.loads(metadata["observation"])
        self.output: str = self.session.get_outputs()[0].name
        self.bounds = _bounds(metadata.get("observation_bounds"))

    def predict(
        self, context: PythonModelContext | None, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if missing := [field for field in self.fields if field not in frame.columns]:
            raise MlflowException.invalid_parameter_value(f"each row needs the fields {self.fields}; missing {missing}")
        observation = frame[self.fields].to_numpy(dtype=np.float32)
        if not np.isfinite(observation).all():
            rows = np.flatnonzero(~np.isfinite(observation).all(axis=1)).tolist()
            raise MlflowException.invalid_parameter_value(f"observations hold NaN or infinite values (rows {rows})")
        if self.bounds is not None:
            self._check_bounds(observation, *self.bounds)
        value, q_values = self.session.run(None, {"observation": observation})
        return pd.DataFrame({self.output: value.astype(np.float64), "q_values": q_values.astype(np.float64).tolist()})

    def _check_bounds(self, observation: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """Refuse rows outside ``[low, high]``, naming each such field, its bounds, the first bad value and the rows."""
        outside = (observation < low) | (observation > high)
        if not outside.any():
            return
        problems = []
        for column in np.flatnonzero(outside.any(axis=0)):
            rows = np.flatnonzero(outside[:, column])
            value, space = float(observation[rows[0], column]), f"[{low[column]:g}, {high[column]:g}]"
            problems.append(f"{self.fields[column]} = {value:g} is outside {space} (rows {rows.tolist()})")
        raise MlflowException.invalid_parameter_value(
            f"observations outside the observation space: {'; '.join(problems)}"
        )


def _bounds(text: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)``, float32, of the metadata ``observation_bounds`` (``null``: unbounded); ``None``: no bounds."""
    if text is None:
        return None
    pairs = json.loads(text)
    low = np.array([-np.inf if pair[0] is None else pair[0] for pair in pairs], dtype=np.float32)
    high = np.array([np.inf if pair[1] is None else pair[1] for pair in pairs], dtype=np.float32)
    return low, high


set_model(OnnxPolicy())
