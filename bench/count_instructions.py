"""Instructions per logged decision, counted by valgrind's callgrind: a figure that does not move
with the machine's load, for comparing two versions of the engine on this noisy VM.

Wall-clock runs of ``bench_decisions.py`` move by up to a quarter from one run to the next here; a
change worth 5 % cannot be seen in them. Callgrind counts the instructions the process executes in
user space (not the kernel's share of writing the log, not time spent waiting), the same count for
the same code and inputs whatever else the machine does. The script runs the engine twice under
callgrind - once deciding a book (``tests/support/workload.py``) only to warm up, once deciding it ``--reps``
more times - and prints the difference per decision. Run it on two checkouts to compare them:

    .venv/bin/python bench/count_instructions.py                 # 2,000 queries, 2 repetitions (~1 min)
    .venv/bin/python bench/count_instructions.py --no-log        # the engine alone
    .venv/bin/python bench/count_instructions.py --root ../other-checkout

Needs valgrind (Debian's package ``valgrind``). Under callgrind the code runs about 50x slower, so
the book is small; instructions are not time (a cache miss costs many), so confirm a large change with
``bench_decisions.py``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run inside callgrind: decide the book once (plans, classes, first pages of the log), then ``reps`` times.
CHILD = """
import sys, tempfile
from pathlib import Path
root, n, reps, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "log"
sys.path.insert(0, root)
from rules.app import Dacp
from rules.policy.loader import load_bundle
from rules.engine.query import parse_query
from rules.settings import Settings
from tests.support.workload import book
policies = Path(root) / "policies"
queries = [parse_query(d) for d in book(n, seed=2026)]
import inspect
# the repository's own bundle, measured as it is (its approvals are not what is measured; older checkouts lack the switch)
mine = {"require_approval": False} if "require_approval" in inspect.signature(Dacp).parameters else {}
dacp = Dacp(Settings(policies=policies, log=Path(tempfile.mkdtemp()) / "log.sqlite"), bundle=load_bundle(policies),
            log_enabled=log, **mine)
for _ in range(1 + reps):
    for chunk in dacp.evaluate_stream(queries, 500):
        pass
"""


def count(root: Path, n: int, reps: int, log: bool) -> int:
    run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                          CHILD, str(root), str(n), str(reps), "log" if log else "nolog"],
                         capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="queries in the book (default 2,000)")
    ap.add_argument("--reps", type=int, default=2, help="times the book is decided after the warm-up (default 2)")
    ap.add_argument("--no-log", action="store_true", help="the engine without the decision log")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default this one)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.n < 1 or args.reps < 1:
        print("-n and --reps must be at least 1", file=sys.stderr)
        return 2
    root = args.root.resolve()
    log = not args.no_log
    base = count(root, args.n, 0, log)
    more = count(root, args.n, args.reps, log)
    per = (more - base) / (args.n * args.reps)
    print(f"{root}: {per:,.0f} instructions per decision ({'with' if log else 'without'} the decision log; "
          f"{args.n:,} queries x {args.reps}, counted by callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
