"""``vpbatch fit`` (SPEC §15): features per state, regularised logistic models, model JSON.

Public API:

* :func:`features` / :func:`day_features`: the ``vp_features`` table as a polars DataFrame;
* :func:`load_model` -> :class:`FittedModel`, whose ``predict(features)`` returns
  ``(call, probability)`` per row (vectorised);
* :func:`fit_models` (``vpbatch fit``) and :func:`write_model_file`;
* :func:`evaluate_with_models` (``vpbatch evaluate --models/--model``).
"""

from vpbatch.fit.features import FEATURES, MODEL_FEATURES, MODELS, day_features, features
from vpbatch.fit.model import FittedModel, ModelFile, load_model, read_model_file, write_model_file
from vpbatch.fit.train import TARGETS, fit_models
from vpbatch.fit.walkforward import evaluate_with_models

__all__ = ["FEATURES", "MODELS", "MODEL_FEATURES", "TARGETS", "FittedModel", "ModelFile",
           "day_features", "evaluate_with_models", "features", "fit_models", "load_model",
           "read_model_file", "write_model_file"]
