"""Line coverage per module from the .coverage file `make test` wrote; fail below the bar.

Usage: coverage_report.py [--fail-under N] MODULE_FOLDER...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import coverage
from coverage.exceptions import NoDataError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-under", type=float, default=80.0)
    parser.add_argument("modules", nargs="+")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    cov = coverage.Coverage(data_file=str(root / ".coverage"))
    cov.load()
    failures = []
    print(f"\n{'module':<22} {'line coverage':>14}")
    for module in args.modules:
        src = root / module / "src"
        try:
            percent = cov.report(include=[f"{src}/*"], file=open("/dev/null", "w"))  # noqa: SIM115
        except NoDataError:
            percent = 100.0  # a package with no statements beyond its version has nothing to miss
        mark = "" if percent >= args.fail_under else f"  < {args.fail_under:.0f}%"
        print(f"{module:<22} {percent:>13.1f}%{mark}")
        if percent < args.fail_under:
            failures.append(module)
    total = cov.report(file=open("/dev/null", "w"))  # noqa: SIM115
    print(f"{'all':<22} {total:>13.1f}%")
    if failures:
        print(f"coverage below {args.fail_under:.0f}%: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
