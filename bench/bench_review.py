"""Speed of `golfeval review` over the real record tree (../shared/records), and of the code
recount of the shared reference scripts.

Two figures: (1) the whole tree: one `golfeval review RECORDS --json` call (start-up
included), one `golfeval review FOLDER --json` subprocess per record folder summed, and the
library calls in one process. (2) `count_code` of each
reference script with the two minified sizes (python-minifier dominates). Pinned to one
core where possible; wall and CPU time. Writes bench/results/review.json.

    .venv/bin/python bench/bench_review.py [--records ../shared/records] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_subprocess(folders) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    pin = ["taskset", "-c", "0"] if os.path.exists("/usr/bin/taskset") else []
    cpu0, t0 = _child_cpu(), time.perf_counter()
    codes = []
    for f in folders:
        p = subprocess.run(pin + [sys.executable, "-m", "golfeval", "review", str(f), "--json"],
                           env=env, capture_output=True)
        codes.append(p.returncode)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _child_cpu() - cpu0,
            "exit_codes": codes}


def tree_one_call(records: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    pin = ["taskset", "-c", "0"] if os.path.exists("/usr/bin/taskset") else []
    cpu0, t0 = _child_cpu(), time.perf_counter()
    p = subprocess.run(pin + [sys.executable, "-m", "golfeval", "review", str(records),
                              "--json"], env=env, capture_output=True)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _child_cpu() - cpu0,
            "exit_code": p.returncode}


def tree_in_process(folders) -> dict:
    from golfeval.records.review import review_record

    c0, t0 = time.process_time(), time.perf_counter()
    ok = [review_record(f).ok for f in folders]
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "passed": sum(ok)}


def scripts(reference: Path) -> list[dict]:
    from golfeval.records.codecount import count_code

    out = []
    for p in sorted(reference.glob("*/train_gpt*.py")):
        t0 = time.perf_counter()
        c = count_code(files=[p])
        out.append({"script": p.relative_to(reference).as_posix(), "raw_bytes": c.raw_bytes,
                    "recipe_bytes": c.recipe_bytes, "minified_bytes": c.minified_bytes,
                    "seconds": round(time.perf_counter() - t0, 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, default=SHARED / "records")
    ap.add_argument("--reference", type=Path, default=SHARED / "reference")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "review.json")
    args = ap.parse_args()
    from golfeval.records.folders import find_record_folders

    folders = find_record_folders(args.records)
    one = [tree_one_call(args.records) for _ in range(args.repeat)]
    sub = [tree_subprocess(folders) for _ in range(args.repeat)]
    inproc = [tree_in_process(folders) for _ in range(args.repeat)]
    import torch

    res = {
        "machine": f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
                   f"torch {torch.__version__}",
        "folders": len(folders),
        "tree_one_call_wall_s": statistics.median(r["wall_s"] for r in one),
        "tree_one_call_cpu_s": statistics.median(r["cpu_s"] for r in one),
        "tree_one_call_exit_code": one[0]["exit_code"],
        "tree_subprocess_wall_s": statistics.median(r["wall_s"] for r in sub),
        "tree_subprocess_cpu_s": statistics.median(r["cpu_s"] for r in sub),
        "tree_in_process_wall_s": statistics.median(r["wall_s"] for r in inproc),
        "tree_in_process_cpu_s": statistics.median(r["cpu_s"] for r in inproc),
        "exit_codes": sub[0]["exit_codes"],
        "reference_scripts": scripts(args.reference) if args.reference.is_dir() else [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
