"""Kill bench's worker processes at random moments; count runs that hang.

    python benchmarks/worker_kill_stress.py [--runs 40] [--seed 1] [--root .]

Each run is `epsinas-onnx bench nb201 --sample 60 --workers 2` (batch 8,
synthetic input) in its own store. Once both workers exist, after a random
0.5-4 s (start-up, loading the job, scoring), each worker is SIGKILLed with
probability 0.7, as the out-of-memory killer would. A run must then finish by
itself within --timeout s: exit 0 with every architecture stored (error rows
for the ones being scored), or, where every worker died before it was ready,
a one-line error. Prints one line per run and the count of hangs.
--root: the checkout whose epsinas_onnx to run (another worktree, to compare).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workers_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"spawn_main" in cmdline and parent == pid:
            found.append(int(entry))
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("reads /proc: Linux only")
    rng = random.Random(args.seed)
    hangs = 0
    for run in range(args.runs):
        store = Path(tempfile.mkdtemp()) / "r.sqlite"
        cmd = [sys.executable, "-m", "epsinas_onnx", "bench", "nb201", "--batch-size", "8", "--store", str(store),
               "--no-progress", "--sample", "60", "--seed", str(run), "--synthetic", "normal", "--workers", "2"]
        proc = subprocess.Popen(cmd, cwd=args.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        start = time.perf_counter()
        while len(workers_of(proc.pid)) < 2 and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.5, 4.0))
        killed = 0
        for pid in workers_of(proc.pid)[:2]:
            if rng.random() < 0.7:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            hangs += 1
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            print(f"run {run}: {killed} killed, HANG (no exit in {args.timeout:.0f} s)", flush=True)
            continue
        with sqlite3.connect(store) as db:
            rows, errors = db.execute("SELECT count(*), count(error) FROM results").fetchone()
        last = (out if proc.returncode == 0 else err).strip().splitlines()[-1:] or [""]
        print(f"run {run}: {killed} killed, exit {proc.returncode} in {time.perf_counter() - start:.1f} s, "
              f"{rows} rows ({errors} errors): {last[0][:100]}", flush=True)
    print(f"{args.runs} runs, {hangs} hangs")


if __name__ == "__main__":
    main()
