"""Metadata management and the model registry: MLflow runs, lineage, aliases, promotion.

:mod:`~fraud_detection.registry.lineage` computes what a model version records about its
origin (git commit, DVC data hash, feature service, validation ids, config hash, training
window) without importing MLflow; :mod:`~fraud_detection.registry.tracking` is the thin
MLflow adapter: it logs training runs, registers versions with that lineage, and moves
the ``challenger`` and ``champion`` aliases.
"""
