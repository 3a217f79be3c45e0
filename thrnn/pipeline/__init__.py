"""The nightly pipeline around the model: settings, DAG params, task bodies, MLflow registry, publishing.

Nothing here imports torch, pyspark or mlflow at module level, so the DAG file can import the
lightweight modules (``settings``, ``params``) at parse time.
"""

import os

# MLflow's usage telemetry stays off in the pipeline's processes unless the deployment turns it on. On a
# host without internet access (a production worker) its config-fetch thread fails and deletes an
# environment variable while the task thread iterates os.environ inside `requests` (proxy lookup): the
# MLflow call then fails with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' and the task is retried. Seen on the
# local production shape (docs/operations.md); set here because MLflow starts that thread at import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
