"""Speed of `golfeval logs RECORDS_ROOT --json` on a synthetic ~30 MB / 60-folder tree.

The tree replicates the real record folders (../shared/records) under varied names and pads
every folder to ~0.5 MB with seed variants of real logs (each variant gets a new seed in its
name and one extra line, so no two files are identical), then times the installed CLI as a
subprocess pinned to one core, start-up included: wall time and CPU time (the machine is
shared, so CPU time is the steadier figure). Writes bench/results/logs.json.

    .venv/bin/python bench/bench_logs.py [--records ../shared/records] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = ROOT.parent / "shared" / "records"
sys.path.insert(0, str(ROOT))


def build_tree(records: Path, out: Path, folders: int, target_mb: float) -> dict:
    from golfeval.records.folders import find_record_folders, list_log_files

    sources = find_record_folders(records)
    if not sources:
        raise SystemExit(f"no record folders under {records}")
    per_folder = target_mb * 1e6 / folders
    pool = sorted((p for s in sources for p in list_log_files(s)),
                  key=lambda p: -p.stat().st_size)[:12]
    total = files = 0
    for i in range(folders):
        src = sources[i % len(sources)]
        track = "track_non_record_16mb" if "non_record" in str(src) else "track_10min_16mb"
        dest = out / track / f"{src.name}_bench{i:02d}"
        dest.mkdir(parents=True)
        for p in src.iterdir():
            if p.is_file() and p.suffix == ".json":
                shutil.copyfile(p, dest / p.name)
        logs = list_log_files(src)
        size = 0
        for p in logs:
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            size += p.stat().st_size
            files += 1
        j = 0
        while size < per_folder:
            p = pool[(i + j) % len(pool)]
            data = p.read_bytes() + f"\nbench variant {i} {j}\n".encode()
            (dest / f"train_seed{9000 + j}{p.suffix}").write_bytes(data)
            size += len(data)
            files += 1
            j += 1
        total += size
    return {"folders": folders, "files": files, "bytes": total}


def _pin():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def time_cli(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys) seconds of `golfeval ARGS`, `repeat` times."""
    exe = Path(sys.executable).parent / "golfeval"
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), *args], capture_output=True, preexec_fn=_pin)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"golfeval {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    return walls, cpus


def _stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "all": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, default=DEFAULT_RECORDS)
    ap.add_argument("--folders", type=int, default=60)
    ap.add_argument("--mb", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "logs.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="golf-bench-logs-") as tmp:
        root = Path(tmp) / "records"
        tree = build_tree(args.records, root, args.folders, args.mb)
        startup = time_cli(["--help"], args.repeat)
        logs = time_cli(["logs", str(root), "--json"], args.repeat)
        verify = time_cli(["verify", str(root), "--json"], args.repeat)
        from golfeval.records.folders import read_tree

        t0 = time.process_time()
        folders = read_tree(root)
        parse_s = time.process_time() - t0
        runs = sum(len(f.runs) for f in folders)
    result = {
        "machine": "2-core CPU sandbox, shared with other jobs; CLI pinned to one core",
        "python": platform.python_version(),
        "tree": tree,
        "runs_parsed": runs,
        "startup_help": {"wall_s": _stats(startup[0]), "cpu_s": _stats(startup[1])},
        "logs_json": {"wall_s": _stats(logs[0]), "cpu_s": _stats(logs[1])},
        "verify_json": {"wall_s": _stats(verify[0]), "cpu_s": _stats(verify[1])},
        "in_process_read_parse_cpu_s": parse_s,
        "parse_mb_per_cpu_s": tree["bytes"] / 1e6 / parse_s,
        "budget_s": 3.0,
    }
    rows = [("tree", f"{tree['folders']} folders, {tree['files']} files, "
                     f"{tree['bytes'] / 1e6:.1f} MB, {runs} runs")]
    for name, key in (("golfeval --help", "startup_help"), ("golfeval logs --json", "logs_json"),
                      ("golfeval verify --json", "verify_json")):
        w, c = result[key]["wall_s"], result[key]["cpu_s"]
        rows.append((name, f"wall {w['median']:.3f} s median ({w['min']:.3f} min), "
                           f"cpu {c['median']:.3f} s median"))
    rows.append(("in-process read+parse", f"{parse_s:.3f} cpu s = "
                                          f"{result['parse_mb_per_cpu_s']:.0f} MB/s"))
    for k, v in rows:
        print(f"{k:<24} {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
