"""Training, evaluation and model validation (pure: no MLflow, Prefect or Feast here).

* :mod:`.model`: the scikit-learn Pipeline that is the model, the time-based holdout
  split, fitting, and the degraded challengers the tests and demos use.
* :mod:`.evaluation`: metrics on a holdout (PR-AUC first), calibration, slices by
  merchant category, amount band and channel, and figures.
* :mod:`.gate`: the promotion decision, challenger against champion, and the
  infrastructure check.
* :mod:`.settings`: ``configs/train.yaml``.
"""
