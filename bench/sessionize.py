"""Benchmark of the Spark sessionize job against its single-process pandas reference (``contract.reference``).

For each size it generates a lastfm-format log with ``synth`` (seeded; reused when present),
runs ``python -m jobs.sessionize`` on ``local[2]`` and ``bench/sessionize_pandas.py`` (the reference), each in its own
process, and records wall time, events/s and peak resident memory (the whole process tree: Python
driver + JVM for Spark), and whether both give identical statistics. Results go to
``bench/results/sessionize.json`` and a Markdown table to ``docs/sessionize_benchmark.md``.

    python bench/sessionize.py                       # 1M, 4M and 16M events
    python bench/sessionize.py --sizes 19000000 --skip-pandas   # the full Last.fm-1K size
    python bench/sessionize.py --sizes 20000 --out /tmp/smoke.json --docs /tmp/smoke.md   # smoke run

Targets: 16M time / 4M time <= 4.4; at 16M Spark within 1.5x of pandas' time with at most
half its peak memory; 19M events in under 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from contract import columns as C

REPO = Path(__file__).resolve().parents[1]

TARGETS = {"linear_ratio_16m_4m": 4.4, "time_vs_pandas_16m": 1.5, "memory_vs_pandas_16m": 0.5, "seconds_19m": 600}


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
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
        rss[pid] = int(fields[21]) * page  # fields[21] = rss in pages
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.2) -> dict[str, Any]:
    """Run ``cmd``; wall time, peak RSS of its process tree (sampled) and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_bytes(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_seconds": round(wall, 3), "peak_rss_mb": round(peak / 2**20, 1), "stdout": out}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line)
        meminfo = Path("/proc/meminfo").read_text().splitlines()[0]
        info["memory_gb"] = round(int(meminfo.split()[1]) / 2**20, 1)
        info["load_average_at_start"] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    import pandas
    import pyspark

    info.update(pyspark=pyspark.__version__, pandas=pandas.__version__)
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


def run_size(events: int, args: argparse.Namespace) -> dict[str, Any]:
    data = generate(events, args.data_dir, args.seed, args.gzip)
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        spark_cmd = [
            sys.executable, "-m", "jobs.sessionize", "--format", "lastfm", "--input", str(data),
            "--output", str(Path(tmp) / "out"), "--master", args.master, "--log-level", "WARNING",
            "--conf", f"spark.driver.memory={args.driver_memory}", "--conf", f"spark.local.dir={tmp}",
            "--conf", "spark.ui.enabled=false",
        ]  # fmt: skip
        spark = measure(spark_cmd, env)
    spark_stats = json.loads(spark.pop("stdout"))
    result: dict[str, Any] = {
        "events_requested": events,
        "input": str(data),
        "input_bytes": data.stat().st_size,
        "raw_rows": spark_stats["raw_rows"],
        "spark": {
            **spark,
            "job_seconds": spark_stats["elapsed_seconds"],
            "events_per_second": round(spark_stats["raw_rows"] / spark["wall_seconds"]),
        },
        "stats": {k: spark_stats[k] for k in C.STATS_KEYS},
    }
    if not args.skip_pandas:
        pandas_cmd = [sys.executable, str(REPO / "bench" / "sessionize_pandas.py"), "--format", "lastfm", "--input", str(data)]
        pandas = measure(pandas_cmd, env)
        pandas_stats = json.loads(pandas.pop("stdout"))
        result["pandas"] = {**pandas, "events_per_second": round(pandas_stats["raw_rows"] / pandas["wall_seconds"])}
        result["stats_identical"] = all(
            (spark_stats[k] == pandas_stats[k]) if isinstance(spark_stats[k], int) else abs(spark_stats[k] - pandas_stats[k]) < 1e-9
            for k in C.STATS_KEYS
        )  # fmt: skip
        result["time_vs_pandas"] = round(spark["wall_seconds"] / pandas["wall_seconds"], 3)
        result["memory_vs_pandas"] = round(spark["peak_rss_mb"] / pandas["peak_rss_mb"], 3)
    return result


def verdicts(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_size = {r["events_requested"]: r for r in results}
    out: dict[str, Any] = {}
    if 4_000_000 in by_size and 16_000_000 in by_size:
        ratio = by_size[16_000_000]["spark"]["wall_seconds"] / by_size[4_000_000]["spark"]["wall_seconds"]
        out["linear_ratio_16m_4m"] = {"value": round(ratio, 3), "target": TARGETS["linear_ratio_16m_4m"], "met": ratio <= 4.4}
    big = by_size.get(16_000_000)
    if big and "pandas" in big:
        out["time_vs_pandas_16m"] = {"value": big["time_vs_pandas"], "target": 1.5, "met": big["time_vs_pandas"] <= 1.5}
        out["memory_vs_pandas_16m"] = {"value": big["memory_vs_pandas"], "target": 0.5, "met": big["memory_vs_pandas"] <= 0.5}
    full = next((r for r in results if r["events_requested"] >= 19_000_000), None)
    if full:
        secs = full["spark"]["wall_seconds"]
        out["seconds_19m"] = {"value": secs, "target": 600, "met": secs < 600}
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Sessionize benchmark",
        "",
        f"Generated by `python bench/sessionize.py {' '.join(report['argv'])}` on {report['started']} "
        f"({m.get('cpus')} CPUs, {m.get('cpu_model', '?')}, {m.get('memory_gb', '?')} GB; Spark {m['pyspark']} "
        f"`{report['master']}`, pandas {m['pandas']}; load average at start {m.get('load_average_at_start')}).",
        "Wall time includes process and JVM start; memory is the peak resident set of the whole process tree.",
        "",
        "| events | Spark s | Spark events/s | Spark peak MB | pandas s | pandas events/s | pandas peak MB | time ratio | memory ratio | same stats |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in report["results"]:
        s, p = r["spark"], r.get("pandas", {})
        lines.append(
            f"| {r['raw_rows']:,} | {s['wall_seconds']:.1f} | {s['events_per_second']:,} | {s['peak_rss_mb']:,.0f} | "
            f"{p.get('wall_seconds', float('nan')):.1f} | {p.get('events_per_second', 0):,} | {p.get('peak_rss_mb', float('nan')):,.0f} | "
            f"{r.get('time_vs_pandas', '-')} | {r.get('memory_vs_pandas', '-')} | {r.get('stats_identical', '-')} |"
        )  # fmt: skip
    if report["verdicts"]:
        lines += ["", "| target | value | limit | met |", "|---|---:|---:|:---:|"]
        for name, v in report["verdicts"].items():
            lines.append(f"| {name} | {v['value']} | {v['target']} | {'yes' if v['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark jobs.sessionize (Spark) against bench/sessionize_pandas.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000], help="events per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory (local mode: the whole JVM heap)")
    parser.add_argument("--gzip", action="store_true", help="generate gzipped input (one Spark task per file)")
    parser.add_argument("--skip-pandas", action="store_true", help="run only the Spark job")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "bench", help="where generated inputs are kept")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of temporary outputs (default: system temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sessionize.json", help="JSON results")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "sessionize_benchmark.md", help="Markdown table")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "master": args.master,
        "driver_memory": args.driver_memory,
        "machine": machine_info(),
        "results": [],
    }
    for events in args.sizes:
        print(f"sessionize benchmark: {events:,} events ...", file=sys.stderr, flush=True)
        report["results"].append(run_size(events, args))
        print(json.dumps(report["results"][-1], indent=2), file=sys.stderr, flush=True)
    report["verdicts"] = verdicts(report["results"])
    for path, text in ((args.out, json.dumps(report, indent=2) + "\n"), (args.docs, markdown(report))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
