"""The MLflow pyfunc model, logged from code: MLflow runs this file to build the model.

It wraps a :class:`pipeline.scoring.ModelBundle` read from plain files (JSON, YAML, torch
weights loaded with ``weights_only=True``), so loading a registered model never unpickles an
object. The ``pipeline`` package travels with the model (MLflow ``code_paths``), so serving it
installs only the pinned third-party requirements.
"""

from pathlib import Path

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from pipeline.config import TIMESTAMP
from pipeline.scoring import WORKER_DEVICE, ModelBundle


class TsadModel(PythonModel):
    """Scores a canonical frame (``timestamp``, ``entity``, features) row by row.

    Timestamps arrive as ISO 8601 strings in a JSON request (``dataframe_split``); any offset is
    honoured and the rows are scored on the UTC time line, as batch scoring does.
    """

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]), device=WORKER_DEVICE)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True, format="ISO8601")
        return self.bundle.score_frame(frame)


set_model(TsadModel())
