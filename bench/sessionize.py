"""Benchmark of the Spark sessionize job against the fast single-process pandas implementation.

For each size it generates a lastfm-format log with ``synth`` (seeded; reused when present), then
runs, ``--repeats`` times and interleaved (Spark, pandas, Spark, pandas, ...), ``python -m
jobs.sessionize`` on ``local[2]`` and ``bench/sessionize_pandas.py`` (vectorized pandas/numpy/pyarrow;
not the line-by-line reference ``contract.reference``, which is for correctness), each in its own
process writing the job's output layout. Per run it records the load average at the start, wall time
(process start to exit: Python, JVM start and session included for Spark), CPU seconds and peak
resident memory of the whole process tree, and for Spark the number of Spark jobs and the session
start time (from the job's ``--metrics``). Medians over the repeats; the outputs of both (every
Parquet table as read back, and stats.json) must be equal. Results go to ``bench/results/`` (JSON);
``--docs`` replaces the generated table of docs/sessionize_benchmark.md.

    python bench/sessionize.py --repeats 3 --docs docs/sessionize_benchmark.md   # 1M, 4M, 16M (idle machine)
    python bench/sessionize.py --sizes 19000000 --skip-pandas --out bench/results/sessionize_19m.json
    python bench/sessionize.py --sizes 20000 --out /tmp/smoke.json              # smoke run

Targets: 1M events Spark within 1.5x of pandas' time (small nights), 16M at or below 1.0x with at most
half pandas' peak memory; 16M time / 4M time <= 4.4; 19M events in under 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from contract import columns as C

REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "time_vs_pandas_1m": 1.5,
    "time_vs_pandas_16m": 1.0,
    "memory_vs_pandas_16m": 0.5,
    "linear_ratio_16m_4m": 4.4,
    "seconds_19m": 600,
}
TABLE_BEGIN, TABLE_END = "<!-- bench/sessionize.py table: begin -->", "<!-- bench/sessionize.py table: end -->"


def _tree(root: int) -> tuple[dict[int, int], dict[int, int]]:
    """(rss bytes, cpu ticks) of ``root`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    stat: dict[int, tuple[int, int]] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] = ppid
        # fields[21] = rss in pages; fields[11], fields[12] = utime, stime in clock ticks
        stat[pid] = (int(fields[21]) * page, int(fields[11]) + int(fields[12]))
    rss, cpu, stack = {}, {}, [root]
    while stack:
        pid = stack.pop()
        if pid in stat:
            rss[pid], cpu[pid] = stat[pid]
        stack.extend(children.get(pid, []))
    return rss, cpu


def measure(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.2) -> dict[str, Any]:
    """Run ``cmd``: the load average at its start, wall time, peak RSS and CPU seconds of its process
    tree (sampled; the CPU of a process is its last sample) and its stdout."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    peak, ticks = 0, {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            rss, cpu = _tree(proc.pid)
            peak = max(peak, sum(rss.values()))
            ticks.update(cpu)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {
        "load_average_at_start": round(load, 2),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(sum(ticks.values()) / os.sysconf("SC_CLK_TCK"), 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "stdout": out,
    }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line)
        meminfo = Path("/proc/meminfo").read_text().splitlines()[0]
        info["memory_gb"] = round(int(meminfo.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import pandas
    import pyspark

    info.update(pyspark=pyspark.__version__, pandas=pandas.__version__, pyarrow=pa.__version__)
    return info


def generate(events: int, data_dir: Path, seed: int, gzip: bool) -> Path:
    path = data_dir / f"lastfm_{events}_seed{seed}.tsv{'.gz' if gzip else ''}"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "synth", "--format", "lastfm", "--events", str(events), "--out",
             str(path), "--seed", str(seed), "--no-progress", "--gzip" if gzip else "--no-gzip"],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return path


def _read_table(folder: Path) -> pa.Table:
    """A Parquet folder's rows in file-name order (the order readers see)."""
    files = sorted(folder.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).replace_schema_metadata(None)


def same_output(spark_out: Path, pandas_out: Path) -> dict[str, bool]:
    """Per table (and stats.json but elapsed_seconds and the inputs' spelling): equal in both outputs.
    Types as read back; a column stored nullable by one and not by the other still compares equal."""
    same = {}
    for name in (C.TRAIN_DIR, C.TEST_DIR, C.ITEMS_DIR, C.USERS_DIR, C.QUARANTINE_DIR):
        a, b = _read_table(spark_out / name), _read_table(pandas_out / name)
        same[name] = a.column_names == b.column_names and all(
            x.type == y.type and x.combine_chunks().equals(y.combine_chunks()) for x, y in zip(a.columns, b.columns, strict=True)
        )  # fmt: skip
    stats = [json.loads((p / C.STATS_FILE).read_text()) for p in (spark_out, pandas_out)]
    for s in stats:
        s.pop("elapsed_seconds", None)
        s.pop("inputs", None)
    same[C.STATS_FILE] = stats[0] == stats[1]
    return same


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def run_size(events: int, args: argparse.Namespace) -> dict[str, Any]:
    data = generate(events, args.data_dir, args.seed, args.gzip)
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    spark_runs: list[dict[str, Any]] = []
    pandas_runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"events_requested": events, "input": str(data), "input_bytes": data.stat().st_size}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        spark_out, pandas_out, metrics = Path(tmp) / "spark_out", Path(tmp) / "pandas_out", Path(tmp) / "metrics.json"
        spark_cmd = [
            sys.executable, "-m", "jobs.sessionize", "--format", "lastfm", "--input", str(data),
            "--output", str(spark_out), "--master", args.master, "--log-level", "WARNING",
            "--metrics", str(metrics), "--max-bad-fraction", "1",
            "--conf", f"spark.driver.memory={args.driver_memory}", "--conf", f"spark.local.dir={tmp}",
            *[x for kv in args.conf for x in ("--conf", kv)],
        ]  # fmt: skip
        pandas_cmd = [sys.executable, str(REPO / "bench" / "sessionize_pandas.py"), "--format", "lastfm",
                      "--input", str(data), "--output", str(pandas_out)]  # fmt: skip
        for repeat in range(args.repeats):
            run = measure(spark_cmd, env)
            stats = json.loads(run.pop("stdout"))
            job = json.loads(metrics.read_text())
            spark_runs.append({**run, "job_seconds": stats["elapsed_seconds"], "spark_jobs": job["spark_jobs"],
                               "session_start_seconds": job["session_start_seconds"], "phases": job["phases"]})  # fmt: skip
            result["raw_rows"] = stats["raw_rows"]
            result["stats"] = {k: stats[k] for k in C.STATS_KEYS}
            if not args.skip_pandas:
                run = measure(pandas_cmd, env)
                run.pop("stdout")
                pandas_runs.append(run)
                if repeat == 0:
                    result["same_output"] = same_output(spark_out, pandas_out)
            print(f"  {events:,} events, run {repeat + 1}/{args.repeats}: Spark {spark_runs[-1]['wall_seconds']:.1f} s"
                  + (f", pandas {pandas_runs[-1]['wall_seconds']:.1f} s" if pandas_runs else "")
                  + f" (load {spark_runs[-1]['load_average_at_start']})", file=sys.stderr, flush=True)  # fmt: skip
    rows = result["raw_rows"]
    result["spark"] = {
        "wall_seconds": _median(spark_runs, "wall_seconds"),
        "cpu_seconds": _median(spark_runs, "cpu_seconds"),
        "job_seconds": _median(spark_runs, "job_seconds"),
        "session_start_seconds": _median(spark_runs, "session_start_seconds"),
        "peak_rss_mb": _median(spark_runs, "peak_rss_mb"),
        "spark_jobs": sorted({r["spark_jobs"] for r in spark_runs}),
        "runs": spark_runs,
    }
    result["spark"]["events_per_second"] = round(rows / result["spark"]["wall_seconds"])
    if pandas_runs:
        result["pandas"] = {
            "wall_seconds": _median(pandas_runs, "wall_seconds"),
            "cpu_seconds": _median(pandas_runs, "cpu_seconds"),
            "peak_rss_mb": _median(pandas_runs, "peak_rss_mb"),
            "runs": pandas_runs,
        }
        result["pandas"]["events_per_second"] = round(rows / result["pandas"]["wall_seconds"])
        # the ratio of medians, and the median of the per-pair ratios (robust to a drifting load)
        result["time_vs_pandas"] = round(result["spark"]["wall_seconds"] / result["pandas"]["wall_seconds"], 3)
        result["time_vs_pandas_paired"] = round(statistics.median(
            s["wall_seconds"] / p["wall_seconds"] for s, p in zip(spark_runs, pandas_runs, strict=True)), 3)  # fmt: skip
        result["memory_vs_pandas"] = round(result["spark"]["peak_rss_mb"] / result["pandas"]["peak_rss_mb"], 3)
    return result


def verdicts(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_size = {r["events_requested"]: r for r in results}
    out: dict[str, Any] = {}

    def verdict(name: str, value: float, less: bool = False) -> None:
        limit = TARGETS[name]
        out[name] = {"value": value, "target": limit, "met": value < limit if less else value <= limit}

    small = by_size.get(1_000_000)
    if small and "pandas" in small:
        verdict("time_vs_pandas_1m", small["time_vs_pandas"])
    big = by_size.get(16_000_000)
    if big and "pandas" in big:
        verdict("time_vs_pandas_16m", big["time_vs_pandas"])
        verdict("memory_vs_pandas_16m", big["memory_vs_pandas"])
    if 4_000_000 in by_size and big:
        ratio = big["spark"]["wall_seconds"] / by_size[4_000_000]["spark"]["wall_seconds"]
        verdict("linear_ratio_16m_4m", round(ratio, 3))
    full = next((r for r in results if r["events_requested"] >= 19_000_000), None)
    if full:
        verdict("seconds_19m", full["spark"]["wall_seconds"], less=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    loads = [r["load_average_at_start"] for res in report["results"] for side in ("spark", "pandas")
             for r in res.get(side, {}).get("runs", [])]  # fmt: skip
    lines = [
        f"Generated by `python bench/sessionize.py {' '.join(report['argv'])}` on {report['started']} "
        f"({m.get('cpus')} CPUs, {m.get('cpu_model', '?')}, {m.get('memory_gb', '?')} GB; Spark {m['pyspark']} "
        f"`{report['master']}`, driver memory {report['driver_memory']}, pandas {m['pandas']}, pyarrow {m['pyarrow']}; "
        f"medians of {report['repeats']} interleaved runs; load average at the runs' starts "
        f"{min(loads):.2f}–{max(loads):.2f}).",
        "Wall time is the whole process: Python start, and for Spark JVM start, session start and stop.",
        "",
        "| events | Spark s | of it session start s | Spark jobs | Spark CPU s | Spark peak MB | pandas s | pandas CPU s "
        "| pandas peak MB | time ratio | memory ratio | same output |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in report["results"]:
        s, p = r["spark"], r.get("pandas", {})
        same = r.get("same_output")
        lines.append(
            f"| {r['raw_rows']:,} | {s['wall_seconds']:.1f} | {s['session_start_seconds']:.1f} | "
            f"{'/'.join(map(str, s['spark_jobs']))} | {s['cpu_seconds']:.0f} | {s['peak_rss_mb']:,.0f} | "
            f"{p.get('wall_seconds', float('nan')):.1f} | {p.get('cpu_seconds', float('nan')):.0f} | "
            f"{p.get('peak_rss_mb', float('nan')):,.0f} | {r.get('time_vs_pandas', '–')} | {r.get('memory_vs_pandas', '–')} | "
            f"{'–' if same is None else all(same.values())} |"
        )  # fmt: skip
    if report["verdicts"]:
        lines += ["", "| target | value | limit | met |", "|---|---:|---:|:---:|"]
        for name, v in report["verdicts"].items():
            lines.append(f"| {name} | {v['value']} | {v['target']} | {'yes' if v['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def replace_table(doc: Path, table: str) -> None:
    """Put ``table`` between the markers of ``doc`` (the rest of the document is kept)."""
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_BEGIN) + r".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc} has no {TABLE_BEGIN} ... {TABLE_END} block for the table")
    doc.write_text(pattern.sub(lambda _: f"{TABLE_BEGIN}\n{table}{TABLE_END}", text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark jobs.sessionize (Spark) against bench/sessionize_pandas.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000], help="events per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per size and side (medians reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory (local mode: the whole JVM heap)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    parser.add_argument("--gzip", action="store_true", help="generate gzipped input (one Spark task per file)")
    parser.add_argument("--skip-pandas", action="store_true", help="run only the Spark job")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "bench", help="where generated inputs are kept")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of temporary outputs (default: system temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sessionize.json", help="JSON results")
    parser.add_argument("--docs", type=Path, default=None,
                        help="Markdown file whose generated-table block is replaced (docs/sessionize_benchmark.md)")  # fmt: skip
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "master": args.master,
        "driver_memory": args.driver_memory,
        "conf": args.conf,
        "repeats": args.repeats,
        "machine": machine_info(),
        "results": [],
    }
    for events in args.sizes:
        print(f"sessionize benchmark: {events:,} events ...", file=sys.stderr, flush=True)
        report["results"].append(run_size(events, args))
    report["verdicts"] = verdicts(report["results"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    table = markdown(report)
    if args.docs is not None:
        replace_table(args.docs, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
