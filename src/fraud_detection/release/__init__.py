"""Model release: what happens to a model version between the model gate and serving.

:mod:`.challenger` delivers a challenger that passed the gate (``fraud model release``):
the delivery checks on it in a service of its own, then the shadow period (or the
``champion`` alias at once when shadow is off). :mod:`.shadow` is the pure verdict on a
challenger scored in shadow beside the champion; :mod:`.promotion` reads the prediction
log's shadow window, asks that verdict and promotes, blocks or waits for approval
(``fraud model shadow-check``, ``fraud model approve``). :mod:`.rollback` moves the
``champion`` alias back in one audited command (``fraud model rollback``): registry tags on
the version, a ``rollback`` record in CT's run ledger, and
``<state>/serving/champion.json`` rewritten so the service reloads at once.
"""
