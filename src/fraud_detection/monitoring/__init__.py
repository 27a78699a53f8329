"""Monitoring: drift and performance of what is served, and the signals that start CT."""
