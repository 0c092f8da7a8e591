"""Registry names as plain strings, importable without torch or scikit-learn.

The training DAG builds its ``detector`` Param enum from this tuple at parse time, where the
registry itself (which imports every model) would be too heavy; a test keeps the two equal.
"""

DETECTOR_NAMES: tuple[str, ...] = (
    "anomaly_transformer",
    "dense_ae",
    "iforest",
    "lstm_ae",
    "lstm_forecast",
    "masked_transformer",
    "ocsvm",
    "pca",
    "transformer_ae",
    "vae",
)
