"""Model release: what happens to a model version between the model gate and serving.

:mod:`.rollback` moves the ``champion`` alias back in one audited command (``fraud model
rollback``): registry tags on the version, a ``rollback`` record in CT's run ledger, and
``<state>/serving/champion.json`` rewritten so the service reloads at once.
"""
