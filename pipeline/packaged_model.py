"""The MLflow pyfunc model, logged from code: MLflow runs this file to build the model.

It wraps a :class:`pipeline.scoring.ModelBundle` read from plain files (JSON, YAML, torch
weights loaded with ``weights_only=True``), so loading a registered model never unpickles an
object.
"""

from pathlib import Path

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from pipeline.scoring import WORKER_DEVICE, ModelBundle


class TsadModel(PythonModel):
    """Scores a canonical frame (``timestamp``, ``entity``, features) row by row."""

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]), device=WORKER_DEVICE)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return self.bundle.score_frame(pd.DataFrame(model_input))


set_model(TsadModel())
