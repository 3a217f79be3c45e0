"""
### thrnn_nightly

Every night, for the logical date `D` of the run (never the wall clock):

1. **sessionize** raw logs with Spark (`local[*]` by default, `THRNN_SPARK_MASTER` for a cluster)
2. **validate** the train/test splits against their contracts
3. **train** THRNN (queue/pool from `THRNN_TRAIN_QUEUE` / `THRNN_TRAIN_POOL`, e.g. the `gpu` queue)
4. **evaluate** it beside the baselines; report and plots go to MLflow
5. **register** it as a new version of `thrnn-<dataset>`; it is the night's candidate for `champion`
   only when it is at least as good as the best baseline on next/first-item Recall@20 and MRR@20 and
   not worse than the champion on Recall@20 and MAE (tolerances are params); no qualifying model: a
   baseline's lists (`source`). A backfill (older than the newest published night) is served by its own model
6. **score** every user with the version decided for the night: top-K items, return time, P(return
   within 1/7/30 d), churn risk
7. **publish** `recommendations`, `churn_risk`, `model_runs` (one night replaced atomically, checked
   before the commit)
8. **check** the published night (row counts, probability ranges, one row set per user)
9. **promote**: only now does the `champion` alias move to the night's candidate (never for a backfill);
   a night that fails before leaves the champion and the tables as they were
10. **backtest** (off unless the param `backtest_days` N > 0): the `churn_risk` rows published N days
   ago against the sessions since; Brier, calibration, AUC and MAE to the night's MLflow run

Everything of a night lives under `$THRNN_HOME/runs/<dataset>/<D>/`; re-running a night replaces it.
Task bodies are in `thrnn.pipeline.tasks`; this file only wires them and imports nothing heavy.

#### Training settings: presets and params

Training starts from a **preset**, chosen by the param `preset` or, when it is empty, by the input
`format` (never by the dataset name):

| preset | what it is |
|---|---|
| `lastfm` | product default for Last.fm logs: the paper's LastFM settings plus what validation chose (tied embeddings, cosine schedule, user embedding 50, the personal-history mixture, 10 epochs, the log-normal return-time head) |
| `reddit` | product default for Reddit logs: the paper's Reddit settings (item embedding 50) plus lr 2e-3, tied embeddings, the mixture, 10 epochs, the log-normal head |
| `events` | product default for generic event logs: same as `lastfm` (LastFM-like sizes) |
| `paper-lastfm`, `paper-reddit` | the paper's settings (Table 2 of Vassøy et al. 2019) |

The training params (epochs, batch size, embedding sizes, gap exponent, loss weights, `lr`, `lr_schedule`,
`tie_embeddings`, `mixture`, `personal_window`, `decay`, `seed`) are fields of `thrnn.config.TrainConfig`
(their help, bounds and choices come from there). Each is empty by default, meaning the preset's value;
a value given overrides it. Layering: TrainConfig defaults < preset < given params. `learning_rate` is
still accepted as the old name of `lr`. The table itself is `thrnn.config.PRESETS`; README.md
("Configuration") and docs/quality.md say how the product defaults were chosen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from thrnn.pipeline.params import PARAM_SPECS
from thrnn.pipeline.settings import PipelineSettings

SETTINGS = PipelineSettings.from_env()  # environment only: no database, no connection
TRAIN_PLACEMENT = {k: v for k, v in {"queue": SETTINGS.train_queue, "pool": SETTINGS.train_pool}.items() if v}


def _args() -> tuple[Any, Any, Any]:
    """(settings, validated params, run date) of the running task: the one place the logical date becomes
    the ``datetime.date`` every task takes. Tasks return a state dataclass; XCom gets its ``to_dict()``."""
    from thrnn.pipeline.params import validate_params
    from thrnn.pipeline.tasks import run_date_of

    context = get_current_context()
    return PipelineSettings.from_env(), validate_params(dict(context["params"])), run_date_of(context)


@dag(
    dag_id="thrnn_nightly",
    schedule="0 2 * * *",
    start_date=datetime(2020, 1, 1, tzinfo=UTC),  # early: backfills of any past night are allowed
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    dagrun_timeout=timedelta(hours=12),
    default_args={
        "owner": "thrnn",
        "retries": SETTINGS.retries,
        "retry_delay": timedelta(seconds=SETTINGS.retry_delay),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
    },
    params={name: Param(**spec) for name, spec in PARAM_SPECS.items()},
    doc_md=__doc__,
    tags=["thrnn", "recommendations", "churn", "nightly"],
)
def thrnn_nightly() -> None:
    @task
    def sessionize() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.sessionize(*_args()).to_dict()

    @task
    def validate() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.validate(*_args()).to_dict()

    @task(execution_timeout=timedelta(hours=8), **TRAIN_PLACEMENT)
    def train() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.train(*_args()).to_dict()

    @task
    def evaluate() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.evaluate(*_args()).to_dict()

    @task
    def register() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.register(*_args()).to_dict()

    @task
    def score() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.score(*_args()).to_dict()

    @task
    def publish() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.publish(*_args()).to_dict()

    @task
    def check() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.check(*_args()).to_dict()

    @task
    def promote() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.promote(*_args()).to_dict()

    @task
    def backtest() -> dict[str, Any]:
        from thrnn.pipeline import tasks

        return tasks.backtest(*_args()).to_dict()

    (sessionize() >> validate() >> train() >> evaluate() >> register() >> score() >> publish() >> check()
     >> promote() >> backtest())


thrnn_nightly()
