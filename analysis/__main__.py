"""python -m analysis results/<study>: tables, figures and report.html for one study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import AnalysisError, analyse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Write report.md, report.html, tables.xlsx and figures/*.png into STUDY_DIR/report/.")
    parser.add_argument("study_dir", type=Path, help="a study's results folder, e.g. results/mnist_batchsize")
    args = parser.parse_args(argv)
    try:
        analyse(args.study_dir)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
