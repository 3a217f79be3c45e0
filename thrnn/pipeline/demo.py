"""``make demo``: one night of the whole pipeline on a small generated dataset, then a tour.

Steps: generate a realistic Last.fm-like log with ``synth`` (once), migrate a SQLite Airflow
metadata database under ``$THRNN_HOME/airflow``, run ``airflow dags test thrnn_nightly <date>``, and
print where everything is, the top-5 recommendations of one user, how many users are at risk, the
model history and the commands for the Airflow and MLflow UIs. Running it again runs the next night
(the day after the newest published one), so the tables then hold two nights and model_runs shows the
champion decision. ``python -m thrnn.pipeline.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .settings import PipelineSettings, registered_model_name

REPO = Path(__file__).resolve().parents[2]
DATASET = "demo"
START = dt.date(2026, 1, 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thrnn.pipeline.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--events", type=int, default=20000, help="events in the generated raw log")
    p.add_argument("--users", type=int, default=120, help="users in the generated raw log")
    p.add_argument("--days", type=int, default=47,
                   help="days the generated log spans, from 2026-01-01; ending it just after the first nights "
                        "keeps most users (light users first appear late in the window)")
    p.add_argument("--first-night", type=dt.date.fromisoformat, default=START + dt.timedelta(days=45),
                   help="run date of the first night (later runs take the next day)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                   help="run this night instead of the next one")
    p.add_argument("--epochs", type=int, default=2,
                   help="training epochs (DAG param; the lastfm preset's 40 would make the demo slow)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator and of training")
    p.add_argument("--item-embedding", type=int, default=32,
                   help="item embedding size (DAG param); every other training knob is the lastfm preset's")
    return p


def airflow_env(settings: PipelineSettings) -> dict[str, str]:
    """Environment of the Airflow commands: SQLite metadata under $THRNN_HOME/airflow, our dags/."""
    home = settings.airflow_dir
    return {
        **os.environ,
        "THRNN_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


def _airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"`airflow {args[0]} {args[1]}` failed (exit {done.returncode}); log {log}:\n{tail}")


def correct_run_starts(dag_id: str) -> int:
    """Sets the start of the ``dag.test`` runs of ``dag_id`` to when they really started; returns how many.

    ``airflow dags test`` (``DAG.test``) creates its run with ``start_date`` = the logical date and offers no
    way to pass another one, so a past night would show in the UI as running for months. Its ``run_after``
    is the moment the test began (the CLI passes none, so it is "now"), and a run cannot start before it
    was allowed to. Only ``DAG.test`` runs whose start precedes their ``run_after`` are touched, through
    Airflow's ORM session so the model's own column handling applies. Runs in a process whose environment
    points Airflow at the demo's metadata database.
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(
            DagRun.dag_id == dag_id, DagRun.triggered_by == DagRunTriggeredByType.TEST,
            DagRun.start_date < DagRun.run_after)).all()
        for run in runs:
            run.start_date = run.run_after
    return len(runs)


def _record_real_starts(env: dict[str, str], log: Path) -> None:
    # In a child process: Airflow reads its configuration (the demo's metadata DB) once, at import.
    code = "from thrnn.pipeline.demo import correct_run_starts as f; print('runs corrected:', f('thrnn_nightly'))"
    with open(log, "a") as fh:
        done = subprocess.run([sys.executable, "-c", code], env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        print(f"[demo] warning: could not record the real start of the run (see {log}); the Airflow UI "
              "shows it as starting at its logical date", flush=True)


def next_night(settings: PipelineSettings, first: dt.date) -> dt.date:
    """The day after the newest published night of the demo dataset (``first`` when none)."""
    from .warehouse import connect

    try:
        newest = connect(settings.warehouse).query(
            "SELECT MAX(run_date) FROM model_runs WHERE dataset = ?", [DATASET]).iloc[0, 0]
    except Exception:  # no warehouse or no table yet
        return first
    if newest is None or str(newest) in ("NaT", "None"):
        return first
    return max(first, _as_date(newest) + dt.timedelta(days=1))


def _as_date(value: object) -> dt.date:
    import pandas as pd

    return pd.Timestamp(value).date()


def airflow_password(settings: PipelineSettings) -> str:
    """The admin password of ``airflow standalone`` (Simple auth manager), created once for the demo."""
    import secrets

    path = settings.airflow_dir / "simple_auth_manager_passwords.json.generated"
    users = json.loads(path.read_text()) if path.exists() else {}
    if "admin" not in users:
        users["admin"] = secrets.token_urlsafe(12)
        path.write_text(json.dumps(users))
        path.chmod(0o600)
    return users["admin"]


def tour(settings: PipelineSettings, run_date: dt.date) -> str:
    """What the night produced, as text."""
    from .warehouse import connect

    wh = connect(settings.warehouse)
    paths = settings.run_paths(DATASET, run_date)
    lines = [
        "",
        f"== THRNN demo: night {run_date} done ==",
        f"  THRNN_HOME        {settings.home}",
        f"  this night        {paths.root}  (data/ train/ evaluation/ scores/ state/)",
        f"  evaluation report {paths.evaluation / 'report.md'}",
        f"  warehouse         {settings.warehouse}   (open read-only: duckdb -readonly <file>)",
        f"  MLflow store      {settings.tracking_uri}  (model {registered_model_name(DATASET)}, alias champion)",
        f"  Airflow home      {settings.airflow_dir}",
        f"  SQL               {REPO / 'sql'}  (DDL, views, example queries)",
        "",
    ]
    user = wh.query("SELECT MIN(user_key) FROM latest_recommendations WHERE dataset = ?", [DATASET]).iloc[0, 0]
    top = wh.query(
        "SELECT rank, item_name, item_key, score, source FROM latest_recommendations "
        "WHERE dataset = ? AND user_key = ? AND rank <= 5 ORDER BY rank", [DATASET, user])
    # source: the model version, or the baseline whose lists the night published (docs in sql/README.md)
    lines.append(f"Top-5 recommendations for user {user} (source {top['source'].iloc[0]}):")
    for r in top.itertuples(index=False):
        lines.append(f"  {r.rank}. {r.item_name}  [{r.item_key}]  score {r.score:.3f}")
    risk = wh.query(
        "SELECT COUNT(*) AS users, SUM(CASE WHEN risk_bucket = 'high' THEN 1 ELSE 0 END) AS high, "
        "SUM(CASE WHEN risk_bucket = 'medium' THEN 1 ELSE 0 END) AS medium FROM latest_churn_risk "
        "WHERE dataset = ?", [DATASET]).iloc[0]
    at_risk = int(wh.query("SELECT COUNT(*) FROM at_risk_users WHERE dataset = ?", [DATASET]).iloc[0, 0])
    lines += ["", f"Users at risk (bucket high): {at_risk} of {int(risk['users'])} "
                  f"(medium: {int(risk['medium'] or 0)})", "", "Model history (model_runs):"]
    runs = wh.query(
        "SELECT run_date, model_version, recall_at_20, mae_hours, promoted, scored_with_version, decision "
        "FROM model_runs WHERE dataset = ? ORDER BY run_date", [DATASET])
    for r in runs.itertuples(index=False):
        lines.append(f"  {_as_date(r.run_date)}  v{r.model_version}  Recall@20 {r.recall_at_20:.4f}  "
                     f"MAE {r.mae_hours:.1f} h  promoted={bool(r.promoted)}  scored with v{r.scored_with_version}"
                     f"  ({r.decision})")
    password = airflow_password(settings)
    lines += [
        "",
        "Airflow UI:  make airflow-ui   (airflow standalone on this Airflow home; http://localhost:8080,",
        f"             login admin / {password}; AIRFLOW_PORT=8081 for another port; Ctrl-C stops it)",
        "MLflow UI:   make mlflow-ui    (mlflow ui on this tracking store; http://localhost:5000,",
        "             MLFLOW_PORT=5001 for another port; Ctrl-C stops it)",
        "Next night:  make demo   (runs the day after the newest night)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = PipelineSettings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.airflow_dir.mkdir(parents=True, exist_ok=True)
    log = settings.home / "demo.log"
    t0 = time.perf_counter()

    raw = settings.home / "demo" / "raw" / "lastfm.tsv"
    if not raw.exists():
        from synth import generate

        print(f"[demo] generating {args.events} events of {args.users} users -> {raw}", flush=True)
        generate("lastfm", args.events, raw, seed=args.seed, users=args.users, start=START.isoformat(),
                 days=args.days)
    env = airflow_env(settings)
    print(f"[demo] migrating the Airflow metadata DB (SQLite) in {settings.airflow_dir}; log {log}", flush=True)
    _airflow(["db", "migrate"], env, log)

    run_date = args.run_date or next_night(settings, args.first_night)
    conf = {"dataset": DATASET, "format": "lastfm", "input_paths": [str(raw)], "epochs": args.epochs,
            "item_embedding": args.item_embedding, "seed": args.seed, "top_k": 20}
    print(f"[demo] running thrnn_nightly for {run_date} (airflow dags test; a few minutes) ...", flush=True)
    try:
        _airflow(["dags", "test", "thrnn_nightly", f"{run_date.isoformat()}T02:00:00+00:00",
                  "--conf", json.dumps(conf)], env, log)
    finally:  # a failed night too is shown in the UI, with its real duration
        _record_real_starts(env, log)
    print(tour(settings, run_date))
    print(f"\n[demo] finished in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
