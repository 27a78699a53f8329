"""Data validation gates (Great Expectations 1.x suites versioned as JSON in ``suites/``).

* :mod:`.suites`: the suites built in code (pure) and their run-time parameters.
* :mod:`.gate`: running a suite on a raw partition or a training set, Data Docs, records,
  and which partitions were accepted.
* :mod:`.values`: the value-skew statistics of a partition and the bands learnt from
  accepted ones (pure).
* :mod:`.expectations`: our own GX 1.x expectations (imported where GX runs).
* :mod:`.settings`: the tunable bounds, ``configs/validation.yaml``.
* :mod:`.cli`: ``fraud validate ...``.

Importing this package imports nothing heavy; Great Expectations is loaded only when a
gate runs.
"""
