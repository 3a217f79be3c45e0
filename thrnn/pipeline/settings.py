"""Instance-wide settings of the nightly pipeline, read from environment variables.

Run-time knobs (epochs, tolerances, ...) are DAG params (:mod:`thrnn.pipeline.params`); what is here
belongs to the deployment: where files live, which MLflow / warehouse / Spark to talk to, and which
Airflow queue and pool the training task goes to. Reading these touches no database or network, so
the DAG file may build them at parse time.

Environment variables (all optional):

=========================== ==============================================================
``THRNN_HOME``              root of everything local (default ``./var``)
``MLFLOW_TRACKING_URI``     MLflow tracking URI (default ``sqlite:///$THRNN_HOME/mlflow.db``)
``THRNN_MLFLOW_ARTIFACTS``  artifact root for new experiments (default ``$THRNN_HOME/mlartifacts``)
``THRNN_WAREHOUSE_URL``     ``postgresql://...`` or ``duckdb:///path`` (default DuckDB
                            ``$THRNN_HOME/warehouse.duckdb``)
``AIRFLOW_HOME``            Airflow home (default ``$THRNN_HOME/airflow``)
``THRNN_SPARK_MASTER``      Spark master for the sessionize task (default ``local[*]``)
``THRNN_SPARK_CONF``        extra Spark settings, ``key=value,key=value`` (local masters default to
                            4 shuffle partitions: Spark's 200 cost minutes on small nights); they
                            win over the batch settings a session the task starts gets
                            (:func:`thrnn.pipeline.sessionizing.session_conf`)
``THRNN_TRAIN_QUEUE``       Celery queue of the training task (e.g. ``gpu``; default queue if unset)
``THRNN_TRAIN_POOL``        Airflow pool of the training task (default pool if unset)
``THRNN_TRAIN_NPROC``       training processes (default 1); above 1 the train task launches
                            ``torchrun --standalone --nproc-per-node N -m thrnn train`` (data-parallel:
                            gloo on CPU, one GPU per process with nccl)
``THRNN_DEVICE``            ``auto`` | ``cpu`` | ``cuda`` for training and scoring (default ``auto``)
``THRNN_TASK_RETRIES``      Airflow retries of every task (default 2, exponential back-off)
``THRNN_TASK_RETRY_DELAY``  seconds before the first retry (default 120; doubles at each retry, at
                            most 30 min)
``THRNN_INPUT_PATHS``       comma-separated raw inputs when the DAG param ``input_paths`` is empty
=========================== ==============================================================
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_HOME = "./var"
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class RunPaths:
    """Every path of one (dataset, run_date); nothing outside ``root`` is written by a run."""

    root: Path

    @property
    def data(self) -> Path:
        """Sessionize output (train/, test/, items/, users/, quarantine/, stats.json)."""
        return self.root / "data"

    @property
    def train(self) -> Path:
        """Training run folder (model.pt, config.json, history.json, checkpoints)."""
        return self.root / "train"

    @property
    def evaluation(self) -> Path:
        """metrics.json, baselines, report.md and plots."""
        return self.root / "evaluation"

    @property
    def scores(self) -> Path:
        """recommendations.parquet and churn_risk.parquet as published."""
        return self.root / "scores"

    @property
    def state(self) -> Path:
        """Small JSON hand-offs between tasks (mlflow run id, registry decision, ...)."""
        return self.root / "state"


@dataclass(frozen=True)
class PipelineSettings:
    """Deployment settings; build with :meth:`from_env`."""

    home: Path = field(default=Path(DEFAULT_HOME), metadata={"help": "THRNN_HOME: root of local state"})
    mlflow_tracking_uri: str = field(
        default="", metadata={"help": "MLflow tracking URI; empty = SQLite file $THRNN_HOME/mlflow.db"}
    )
    mlflow_artifact_root: str = field(
        default="", metadata={"help": "artifact location of new experiments; empty = $THRNN_HOME/mlartifacts"}
    )
    warehouse_url: str = field(
        default="", metadata={"help": "postgresql://... or duckdb:///file; empty = $THRNN_HOME/warehouse.duckdb"}
    )
    airflow_home: Path | None = field(default=None, metadata={"help": "AIRFLOW_HOME; None = $THRNN_HOME/airflow"})
    spark_master: str = field(default="local[*]", metadata={"help": "Spark master URL of the sessionize task"})
    spark_conf: tuple[tuple[str, str], ...] = field(
        default=(), metadata={"help": "THRNN_SPARK_CONF: extra Spark settings, 'key=value,key=value'"}
    )
    train_queue: str | None = field(default=None, metadata={"help": "Celery queue of the train task (e.g. gpu)"})
    train_pool: str | None = field(default=None, metadata={"help": "Airflow pool of the train task"})
    train_nproc: int = field(
        default=1, metadata={"help": "THRNN_TRAIN_NPROC: data-parallel training processes (torchrun) of the train task"}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda for training and scoring"})
    retries: int = field(default=2, metadata={"help": "THRNN_TASK_RETRIES: Airflow retries per task"})
    retry_delay: float = field(
        default=120.0, metadata={"help": "THRNN_TASK_RETRY_DELAY: seconds before the first retry"}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).resolve())
        if self.train_nproc < 1:
            raise ValueError(f"THRNN_TRAIN_NPROC must be >= 1, got {self.train_nproc}")
        if self.retries < 0:
            raise ValueError(f"THRNN_TASK_RETRIES must be >= 0, got {self.retries}")
        if not (self.retry_delay > 0 and self.retry_delay < float("inf")):
            raise ValueError(f"THRNN_TASK_RETRY_DELAY must be a positive number of seconds, got {self.retry_delay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"THRNN_DEVICE must be auto, cpu or cuda, got {self.device!r}")
        url = self.warehouse_url
        if url and not url.startswith(("postgresql://", "postgres://", "duckdb://")):
            raise ValueError(
                f"THRNN_WAREHOUSE_URL must start with postgresql:// or duckdb:///, got {_redact(url)!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if environ is None else environ
        return cls(
            home=Path(env.get("THRNN_HOME") or DEFAULT_HOME),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", ""),
            mlflow_artifact_root=env.get("THRNN_MLFLOW_ARTIFACTS", ""),
            warehouse_url=env.get("THRNN_WAREHOUSE_URL", ""),
            airflow_home=Path(env["AIRFLOW_HOME"]) if env.get("AIRFLOW_HOME") else None,
            spark_master=env.get("THRNN_SPARK_MASTER") or "local[*]",
            spark_conf=_pairs(env.get("THRNN_SPARK_CONF", "")),
            train_queue=env.get("THRNN_TRAIN_QUEUE") or None,
            train_pool=env.get("THRNN_TRAIN_POOL") or None,
            train_nproc=int(env.get("THRNN_TRAIN_NPROC") or 1),
            device=env.get("THRNN_DEVICE") or "auto",
            retries=int(env.get("THRNN_TASK_RETRIES") or 2),
            retry_delay=float(env.get("THRNN_TASK_RETRY_DELAY") or 120),
        )

    # --- derived locations ---
    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        """Artifact location of new experiments; empty for a tracking server (it decides, and proxies)."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.tracking_uri.startswith(("http://", "https://")):
            return ""
        return (self.home / "mlartifacts").as_uri()

    @property
    def warehouse(self) -> str:
        """Warehouse URL, always with a scheme (``duckdb:///abs/path`` by default)."""
        return self.warehouse_url or f"duckdb://{self.home / 'warehouse.duckdb'}"

    @property
    def airflow_dir(self) -> Path:
        return self.airflow_home or self.home / "airflow"

    def run_paths(self, dataset: str, run_date: dt.date) -> RunPaths:
        """``$THRNN_HOME/runs/<dataset>/<run_date>/``: re-runs and backfills of other dates never collide.

        ``run_date`` is a ``datetime.date`` (a text date goes through :func:`parse_run_date` first), so
        the folder's name is always ``YYYY-MM-DD``.
        """
        if not isinstance(run_date, dt.date) or isinstance(run_date, dt.datetime):
            raise TypeError(f"run_date must be a datetime.date, got {type(run_date).__name__} {run_date!r}")
        return RunPaths(self.home / "runs" / dataset / run_date.isoformat())

    def spark_settings(self) -> dict[str, str]:
        """Spark conf of the sessionize task: small-night defaults for local masters, then THRNN_SPARK_CONF."""
        conf = {"spark.ui.enabled": "false", "spark.local.dir": str(self.home / "spark-tmp")}
        if self.spark_master.startswith("local"):
            conf["spark.sql.shuffle.partitions"] = "4"
        conf.update(dict(self.spark_conf))
        return conf

    def to_dict(self) -> dict[str, str | None]:
        d = {k: (str(v) if v is not None else None) for k, v in asdict(self).items()}
        d["warehouse_url"] = _redact(self.warehouse)
        d["mlflow_tracking_uri"] = _redact(self.tracking_uri)
        return d


def parse_run_date(text: str) -> dt.date:
    """A run date given as text: exactly ``YYYY-MM-DD`` (anything else, e.g. with path separators, is
    refused with ``ValueError``); where a string becomes the date every task takes."""
    if not (isinstance(text, str) and _ISO_DAY.fullmatch(text)):
        raise ValueError(f"a run date must be YYYY-MM-DD, got {text!r}")
    return dt.date.fromisoformat(text)


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"THRNN_SPARK_CONF entries must be key=value, got {part!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _redact(url: str) -> str:
    """URL without its password, for logs and MLflow tags."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def registered_model_name(dataset: str) -> str:
    """Registered model per dataset in the MLflow registry."""
    return f"thrnn-{dataset}"
