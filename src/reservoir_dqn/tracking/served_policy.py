"""The registered model's code: the shipped policy's checked ONNX file, run by ONNX Runtime, as an MLflow pyfunc.

MLflow stores this file beside the ONNX file ("models from code") and runs it to load the
model, so a registered version holds no pickled class: loading or serving it needs MLflow,
ONNX Runtime, numpy and pandas, not this package and not PyTorch. ``mlflow models serve``
serves it as it is.

It takes one row per state, the observation's fields as named columns (the ONNX file's
metadata names them; the registered signature lists them), and returns per row the chosen
action in the environment's own units (the reservoir: ``release_hm3``, the release target in
hm3 per month; elsewhere ``action``, its index) and ``q_values``, every action's value.
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
        value, q_values = self.session.run(None, {"observation": observation})
        return pd.DataFrame({self.output: value.astype(np.float64), "q_values": q_values.astype(np.float64).tolist()})


set_model(OnnxPolicy())
