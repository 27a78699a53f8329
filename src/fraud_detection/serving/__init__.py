"""The prediction service: FastAPI on Feast online features, hot reload, prediction log."""
