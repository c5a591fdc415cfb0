"""Kill the bench driver at random moments, resume, and count the rows.

    python benchmarks/store_kill_stress.py [--runs 20] [--seed 0] [--sample 40]

Each run is `epsinas-onnx bench nb201 --sample N --seed RUN` (batch 8,
synthetic input; --workers 1 or 2, alternately) in a store of its own. The
driver alone is sent SIGKILL or SIGTERM (even odds), as `kill -9` or a
scheduler would: in a quarter of the runs at a random 0.3-4 s (the start-up),
in the others 0-0.3 s after a random number of rows (1 to N-2) is stored. Then the same command is rerun to the end. A run passes when

- a SIGTERM run exited 143 with one line on stderr, the resume message (or
  130 with `error: interrupted` before the first row); a SIGTERM before bench
  has set its handler (Python's start-up) or after its last row (the summary
  line) ends the process at once, which is counted apart,
- every row stored before the signal is still there after the resume, unchanged,
- every architecture of the sample has exactly one row, a result, after it:
  none lost, none duplicated, no error row.

Prints one line per run and the totals. Linux or macOS (signals by pid).
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows(store: Path) -> dict[str, tuple]:
    """arch -> (id, score, error, count) of every row; {} before the store exists."""
    if not store.exists():
        return {}
    db = sqlite3.connect(store, timeout=60)
    try:
        return {arch: (rid, score, error, n) for arch, rid, score, error, n in db.execute(
            "SELECT arch, MIN(id), score, error, COUNT(*) FROM results GROUP BY arch")}
    except sqlite3.OperationalError:  # killed before it made its tables
        return {}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    from epsinas_onnx.spaces import nb201

    rng = random.Random(args.seed)
    totals = dict(runs=0, sigkill=0, sigterm=0, after_the_end=0, lost=0, duplicated=0, errors=0, changed=0, bad_exit=0)
    started = time.perf_counter()
    for run in range(args.runs):
        store = Path(tempfile.mkdtemp(prefix="epsinas-kill-")) / "r.sqlite"
        workers = 1 + run % 2
        cmd = [sys.executable, "-m", "epsinas_onnx", "bench", "nb201", "--sample", str(args.sample), "--seed", str(run),
               "--batch-size", "8", "--synthetic", "normal", "--workers", str(workers), "--store", str(store),
               "--no-progress"]
        expected = {nb201.format_arch(a) for a in nb201.sample(args.sample, run)}
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        # a quarter of the signals at a random time in the start-up, the others
        # once a random number of rows is stored (the start-up's length varies)
        at_rows = 0 if rng.random() < 0.25 else rng.randint(1, len(expected) - 2)
        delay = rng.uniform(0.3, 4.0) if not at_rows else rng.uniform(0.0, 0.3)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = time.perf_counter()
        while at_rows and proc.poll() is None and len(rows(store)) < at_rows:
            time.sleep(0.02)
        time.sleep(delay)
        delay = time.perf_counter() - start
        signalled = proc.poll() is None
        if signalled:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=args.timeout)
        before = rows(store)
        note = ""
        if not signalled:
            totals["after_the_end"] += 1
            note = " (finished before the signal)"
        else:
            totals["sigkill" if sig == signal.SIGKILL else "sigterm"] += 1
            if sig == signal.SIGTERM:
                lines = err.strip().splitlines()
                resume_line = len(lines) == 1 and "rerun the same command" in lines[0]
                early_line = lines == ["error: interrupted"] and not before  # before the first architecture
                if proc.returncode not in (143, 130) or not (resume_line or early_line):
                    # (a SIGTERM before bench has set its handlers, in the imports, ends the process at once)
                    if proc.returncode == -signal.SIGTERM and not before:
                        note = " (during start-up, before bench handles SIGTERM: nothing written yet)"
                    elif proc.returncode == -signal.SIGTERM and set(before) >= expected:
                        note = " (after the last row, as bench exited: nothing left to keep)"
                    else:
                        totals["bad_exit"] += 1
                        note += f" BAD EXIT {proc.returncode}: {err.strip()[-200:]!r}"
        resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
        if resumed.returncode != 0:
            totals["bad_exit"] += 1
            note += f" RESUME EXIT {resumed.returncode}: {resumed.stderr.strip()[-200:]!r}"
        after = rows(store)
        lost = len(expected - set(after))
        duplicated = sum(r[3] - 1 for r in after.values())
        errors = sum(r[2] is not None for r in after.values())
        changed = sum(1 for arch, r in before.items() if r[2] is None and after.get(arch, (None,))[:2] != r[:2])
        totals["runs"] += 1
        totals["lost"] += lost
        totals["duplicated"] += duplicated
        totals["errors"] += errors
        totals["changed"] += changed
        shutil.rmtree(store.parent)
        name = signal.Signals(sig).name if signalled else "-"
        when = f"at {delay:4.1f} s" + (f" (row {at_rows})" if at_rows else " (start-up)")
        print(f"run {run:2d}: workers {workers}, {name:7s} {when:20s} (exit {proc.returncode}), "
              f"{len(before):2d} rows stored then, {len(after)} of {len(expected)} after the resume: "
              f"lost {lost}, duplicated {duplicated}, errors {errors}, changed {changed}{note}", flush=True)
    print(f"\n{totals['runs']} runs in {time.perf_counter() - started:.0f} s: {totals['sigkill']} SIGKILL and "
          f"{totals['sigterm']} SIGTERM of the driver ({totals['after_the_end']} runs finished before the signal); "
          f"rows lost {totals['lost']}, duplicated {totals['duplicated']}, error rows {totals['errors']}, "
          f"kept rows changed {totals['changed']}, bad exits {totals['bad_exit']}")
    sys.exit(0 if not any(totals[k] for k in ("lost", "duplicated", "errors", "changed", "bad_exit")) else 1)


if __name__ == "__main__":
    main()
