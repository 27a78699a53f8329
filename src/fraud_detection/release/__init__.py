"""Model release: what happens to a model version between the model gate and serving.

:mod:`.challenger` delivers a challenger that passed the gate (``fraud model release``):
the delivery checks on it in a service of its own, then the ``champion`` alias if they
pass. :mod:`.shadow` is the pure verdict on a challenger scored in shadow beside the
champion. :mod:`.rollback` moves the ``champion`` alias back in one audited command
(``fraud model rollback``): registry tags on the version, a ``rollback`` record in CT's
run ledger, and ``<state>/serving/champion.json`` rewritten so the service reloads at once.
"""
