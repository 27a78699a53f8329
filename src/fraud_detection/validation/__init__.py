"""Data validation gates (Great Expectations 1.x suites versioned as JSON in ``suites/``).

* :mod:`.suites`: the suites built in code (pure) and their run-time parameters.
* :mod:`.gate`: running a suite on a raw partition or a training set, Data Docs, records,
  and which partitions were accepted.
* :mod:`.settings`: the tunable bounds, ``configs/validation.yaml``.
* :mod:`.cli`: ``fraud validate ...``.

Importing this package imports nothing heavy; Great Expectations is loaded only when a
gate runs.
"""
