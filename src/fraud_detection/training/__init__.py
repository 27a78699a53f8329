"""Training, evaluation, model validation and the continuous-training steps.

* :mod:`.model`: the scikit-learn Pipeline that is the model, the time-based holdout
  split, fitting, and the degraded challengers the tests and demos use (pure).
* :mod:`.evaluation`: metrics on a holdout (PR-AUC first), calibration, slices by
  merchant category, amount band and channel, and figures (pure).
* :mod:`.gate`: the promotion decision, challenger against champion (pure; the
  infrastructure verdict comes from ``registry.tracking.infra_check``).
* :mod:`.settings`: ``configs/train.yaml``.
* :mod:`.ct`: the CT steps the Prefect flow and the DVC stages call, with MLflow, Feast
  and the data gate (imported inside the steps).
* :mod:`.cli`: ``fraud train``, ``fraud ct ...``.
"""
