"""Monitors that compute retraining triggers: feature drift, live performance, market regime.

`drift`, `performance` and `regime` are pure numpy/scipy; `services` runs them for each production
model (or traded series), stores the results and raises triggers; `tasks` are the Celery wrappers
that celery-beat runs.
"""
