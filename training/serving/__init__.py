"""Serving: positions for trading services (signals, predictions, artifacts loaded outside CLM),
the registered model as a resource and versions compared on one window."""
