"""Tables, figures and a self-contained HTML report from a study's report files.

    python -m analysis results/<study>      (hpo.run calls `analyse` when a study ends)
    python -m analysis results/A results/B  (several studies side by side: `compare`)

writes report.md, report.html, tables.xlsx and figures/*.png into
results/<study>/report/. Works on a running or interrupted study: it reads the
report files as they are and says how many trials are still running.
"""

from __future__ import annotations

from pathlib import Path

from analysis.load import AnalysisError, load

__all__ = ["AnalysisError", "analyse", "compare"]


def analyse(study_dir: Path, log=print, live: bool = False, trust: bool = False) -> Path:
    """Write the report of the study in `study_dir` (results/<study>); return its report folder.
    `trust`: unpickle a study-file model class from the folder for the checkpoint figures (hpo.checkpoints).

    Raises AnalysisError, with a message for a person, for a folder that is not a study."""
    data = load(Path(study_dir))
    from analysis.sections import write_report  # scipy, matplotlib, seaborn: only once there is a study

    return write_report(data, log, live, trust)


def compare(study_dirs: list[Path], out: Path | None = None, log=print, trust: bool = False) -> Path:
    """One report of several studies side by side (analysis/comparison.py), written into `out` (default:
    <results>/compare-A-B beside the first study); returns that folder."""
    from analysis import comparison

    studies = [load(Path(d)) for d in study_dirs]
    out = Path(out) if out else comparison.default_out(studies)
    comparison.check_out(out, studies)
    data = comparison.combine(studies, out)
    from analysis.sections import write_report

    return write_report(data, log, trust=trust)
