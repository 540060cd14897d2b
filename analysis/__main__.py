"""python -m analysis results/<study>: tables, figures and report.html for one study; with several
study folders, one report that compares them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import AnalysisError, analyse, compare


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Write report.md, report.html, tables.xlsx and figures/*.png into STUDY_DIR/report/ (of "
                    "several studies: one comparison into --out).")
    parser.add_argument("study_dir", type=Path, nargs="+",
                        help="a study's results folder, e.g. results/mnist_batchsize; several: one report that "
                             "compares them")
    parser.add_argument("--out", type=Path,
                        help="with several studies: the comparison's folder (default: <results>/compare-A-B "
                             "beside the first study; never a study's own report/)")
    parser.add_argument("--live", action="store_true",
                        help="a report of a study that is still running: a banner, the page reloads itself, "
                             "no figures from checkpoints (hpo.run writes one about once a minute)")
    parser.add_argument("--trust", action="store_true",
                        help="the folder comes from someone you trust: load a model class pickled from its study "
                             "file (study_code.pt) for the figures from the best checkpoint; without it those "
                             "figures are left out with a note, since unpickling runs code from the folder")
    args = parser.parse_args(argv)
    several = len(args.study_dir) > 1
    if (args.out and not several) or (args.live and several):
        parser.error("--out is for a comparison of several studies" if args.out else
                     "--live is for one running study")
    try:
        if several:
            compare(args.study_dir, args.out, trust=args.trust)
        else:
            analyse(args.study_dir[0], live=args.live, trust=args.trust)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
