"""Write the hostile corpus to a folder, optionally open every case and print a table.

    python tests/hostile/generate.py OUT            # one folder per case + manifest.json
    python tests/hostile/generate.py OUT --run      # ... and run them (capped subprocess), table per family

Exit status 1 with ``--run`` when a case does not behave as expected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import harness  # noqa: E402
from hostile.corpus import CASES, counts_by_family  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", action="store_true", help="open every case and report")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--timeout", type=float, default=harness.TIMEOUT_S, help="seconds per case (default %(default)s)")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if a.k in c.name]
    a.out.mkdir(parents=True, exist_ok=True)
    manifest = []
    built = {}
    for c in cases:
        folder = a.out / c.family / c.name
        args = c.make(folder)
        built[c.name] = (c, args, folder)
        manifest.append({"family": c.family, "name": c.name, "what": c.what, "action": c.action,
                         "expect": c.expect, "errors": list(c.errors), "fragments": list(c.fragments),
                         "env": c.env, "args": {k: v for k, v in args.items() if not k.startswith("_")}})
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(cases)} cases in {a.out}: " + ", ".join(f"{k} {v}" for k, v in counts_by_family(cases).items()))
    if not a.run:
        return 0
    answers = harness.run([c.request(args) for c, args, _ in built.values()], timeout=a.timeout)
    bad = Counter()
    for name, (c, args, folder) in built.items():
        problem = c.judge(args, answers[name], folder)
        ans = answers[name]
        outcome = ("OK " if problem is None else "BAD") + f" {ans.get('elapsed_s', '-')}s "
        outcome += "loaded" if ans.get("ok") else str(ans.get("exc") or ans.get("crash") or "timeout")
        print(f"{c.family:8s} {name:36s} {outcome}" + (f"  <- {problem}" if problem else ""))
        if problem:
            bad[c.family] += 1
    print("\n| family | cases | as expected |\n|---|---|---|")
    for fam, n in counts_by_family(cases).items():
        print(f"| {fam} | {n} | {n - bad[fam]} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
