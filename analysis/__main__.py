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
    parser.add_argument("--live", action="store_true",
                        help="a report of a study that is still running: a banner, the page reloads itself, "
                             "no figures from checkpoints (hpo.run writes one about once a minute)")
    parser.add_argument("--trust", action="store_true",
                        help="the folder comes from someone you trust: load a model class pickled from its study "
                             "file (study_code.pt) for the figures from the best checkpoint; without it those "
                             "figures are left out with a note, since unpickling runs code from the folder")
    args = parser.parse_args(argv)
    try:
        analyse(args.study_dir, live=args.live, trust=args.trust)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
