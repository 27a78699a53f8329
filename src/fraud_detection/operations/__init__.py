"""Release operations: the audit log and the pipeline health report (docs/level2.md).

Both are read from the evidence the pipeline already keeps (registry tags, the CT run
ledger, the gate records, the prediction log), never from a store of their own.
"""
