"""python -m analysis results/A results/B ...: several studies side by side in one report.

The studies' trials become one table with an added `study` key, so the report's own tests compare every
configuration of every study with every other (Games-Howell over all pairs, Welch intervals, Hedges' g),
the same configuration across studies included, and the learning curves are drawn per study and
configuration. What makes the studies incomparable (another dataset, epochs, hardware, package versions)
is listed in the report. It is written into its own folder, never into a study's report/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import AnalysisError, StudyData

# What differs between studies and can explain a difference between them: (label, where in study.json).
SETTINGS = [("dataset", ("study", "dataset")), ("model", ("study", "model")), ("epochs", ("study", "epochs")),
            ("seeds", ("study", "seeds")), ("search", ("study", "search")), ("scheduler", ("study", "scheduler")),
            ("--smoke", ("smoke",)), ("training images", ("data", "train_images")),
            ("test images", ("data", "test_images")), ("processor", ("hardware", "processor")),
            ("CPUs", ("hardware", "cpus")), ("GPUs", ("hardware", "gpus")), ("platform", ("hardware", "platform"))]


def _get(meta: dict, path: tuple):
    for key in path:
        meta = meta.get(key) if isinstance(meta, dict) else None
    return meta


def labels(studies: list[StudyData]) -> list[str]:
    """One name per study: its own, or with its folder's parent where two share a name."""
    names = [s.name for s in studies]
    out = [n if names.count(n) == 1 else f"{n} ({s.dir.resolve().parent.name})" for n, s in zip(names, studies)]
    return [n if out.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(out)]


def default_out(studies: list[StudyData]) -> Path:
    """Beside the first study, in its results folder: <results>/compare-A-B."""
    return studies[0].dir.resolve().parent / ("compare-" + "-".join(s.name for s in studies))


def check_out(out: Path, studies: list[StudyData]) -> None:
    for s in studies:
        own = s.dir.resolve()
        if out.resolve() == own or out.resolve().is_relative_to(own / "report"):
            raise AnalysisError(f"--out {out} is inside the study folder {s.dir}: a comparison never writes into a "
                                "study's own report. Give another folder (the default is beside the first study).")


def differences(studies: list[StudyData], names: list[str]) -> list[str]:
    """One line per setting the studies do not share, naming each study's value."""
    lines = []
    for label, path in SETTINGS:
        values = [_get(s.meta, path) for s in studies]
        if len({repr(v) for v in values}) > 1:
            lines.append(f"{label}: " + ", ".join(f"{n} {v if v not in (None, '') else 'unknown'}"
                                                  for n, v in zip(names, values)))
    packages = sorted({k for s in studies for k in (s.meta.get("versions") or {})})
    for package in packages:
        values = [(s.meta.get("versions") or {}).get(package) for s in studies]
        if len(set(values)) > 1:
            lines.append(f"{package}: " + ", ".join(f"{n} {v or 'unknown'}" for n, v in zip(names, values)))
    return lines


def combine(studies: list[StudyData], out: Path) -> StudyData:
    """The studies as one StudyData (written into `out`), with `study` as its first varied key."""
    names = labels(studies)
    objectives = {(s.metric, s.mode) for s in studies}
    if len(objectives) > 1:
        raise AnalysisError("These studies are judged by different metrics ("
                            + ", ".join(f"{n}: {s.metric} ({s.mode})" for n, s in zip(names, studies))
                            + "), so their numbers cannot be compared. Compare studies with the same metric.")
    trials, epochs = [], []
    for name, s in zip(names, studies):
        t = s.trials.assign(**{"config/study": name, "trial_id": name + "/" + s.trials["trial_id"].astype(str)})
        if "checkpoint" in t:  # relative to its own study folder
            t["checkpoint"] = t["checkpoint"].map(lambda c, d=s.dir: str((d / c).resolve())
                                                  if isinstance(c, str) and c else c)
        trials.append(t.drop(columns=[c for c in ("started_s", "ended_s") if c in t]))  # each its own clock
        if not s.epochs.empty:
            epochs.append(s.epochs.assign(**{"config/study": name,
                                             "trial_id": name + "/" + s.epochs["trial_id"].astype(str)}))
    varied = ["study", *dict.fromkeys(k for s in studies for k in s.varied_keys)]

    def shared(key):
        values = {repr(s.study.get(key)) for s in studies}
        return studies[0].study.get(key) if len(values) == 1 else None

    seeds = [s.study.get("seeds") for s in studies if isinstance(s.study.get("seeds"), (int, float))]
    study = {"name": " vs ".join(names), "metric": studies[0].metric, "mode": studies[0].mode,
             "dataset": shared("dataset") or ", ".join(sorted({str(s.study.get("dataset")) for s in studies})),
             "model": shared("model") or ", ".join(sorted({str(s.study.get("model")) for s in studies})),
             "epochs": shared("epochs"), "search": shared("search") or "grid",
             "scheduler": "asha" if any(s.stops_early for s in studies) else "fifo",
             "seeds": min(seeds) if seeds else None, "space": {}}
    meta = {"study": study, "varied_keys": varied,
            "compared": [{"study": n, "folder": str(s.dir), "command": s.meta.get("command"),
                          "ended": s.meta.get("ended")} for n, s in zip(names, studies)],
            "ended": "" if any(not s.meta.get("ended") for s in studies) else "all",
            "differences": differences(studies, names)}
    notes = [f"{n}: {note}" for n, s in zip(names, studies) for note in s.notes]
    return StudyData(out, meta, pd.concat(trials, ignore_index=True),
                     pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(), notes, report_folder=out)
