"""After training: `python -m torchx test|validate|predict|export|rerun RUN_DIR` and the Python API
(`torchx.load_run`, `torchx.load_model`, in api.py) they share."""
