"""The victim as a service: `divqat serve` puts a run's deployed `model.onnx` behind an HTTP API
with keys, query budgets and stateful extraction detection (PRADA), all kept in SQLite.

Importing this package imports nothing heavy: the app (FastAPI) is built by `app.create_app`,
and the serving path needs only onnxruntime and numpy (plus torch for post-hoc defenses).
"""
