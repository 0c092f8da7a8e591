"""The MLflow pyfunc model, logged from code: MLflow runs this file to build the model.

It wraps a :class:`pipeline.scoring.ModelBundle` read from plain files (JSON, YAML, torch
weights loaded with ``weights_only=True``), so loading a registered model never unpickles an
object.
"""

from pathlib import Path

import mlflow
import pandas as pd

from pipeline.scoring import WORKER_DEVICE, ModelBundle


class TsadModel(mlflow.pyfunc.PythonModel):
    """Scores a canonical frame (``timestamp``, ``entity``, features) row by row."""

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]), device=WORKER_DEVICE)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return self.bundle.score_frame(pd.DataFrame(model_input))


mlflow.models.set_model(TsadModel())
