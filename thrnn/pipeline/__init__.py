"""The nightly pipeline around the model: settings, DAG params, task bodies, MLflow registry, publishing.

Nothing here imports torch, pyspark or mlflow at module level, so the DAG file can import the
lightweight modules (``settings``, ``params``) at parse time.
"""
