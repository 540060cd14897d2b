"""The report's content, section by section, and the files it is written to.

Each section function turns tables (tables.py) and figures (figures.py,
samples.py) into a `Section`; render.py lays the sections out.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import advice, figures, fmt, samples, stats, tables
from analysis.load import FINAL, StudyData
from analysis.render import Section, Table, html_page, markdown, write_text, xlsx
from analysis.tables import Skipped

MAX_ROWS = 20  # per-configuration rows shown in the report (tables.xlsx has all)
LOW_UTILISATION = 0.7  # below it, the overview says why trial slots may have stood idle


LIVE_REFRESH_S = 60  # a live report's page reloads itself this often (hpo.run rewrites it about as often)


def write_report(data: StudyData, log, live: bool = False, trust: bool = False) -> Path:
    """Write report.md, tables.xlsx, report.html and figures/*.png; return the report folder.
    `live`: the study is still running: a banner, a page that reloads itself, no checkpoint figures."""
    out = data.report_dir
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for old in figure_dir.glob("*.png"):  # a figure this run skips must not linger from an earlier one
        old.unlink()
    sections = [_trials_section(data, figure_dir, log)]
    if data.meta.get("compared"):
        sections.append(_compared_section(data))
    if data.is_search:  # its top trials say more than configurations seen once each
        sections.append(_search_section(data, figure_dir, log))
    configs, pairwise = tables.config_tables(data)
    sections += [_configs_section(data, configs, pairwise), _next_section(data, configs),
                 _effects_section(data, configs, figure_dir, log),
                 _cost_section(data, figure_dir, log), _curves_section(data, figure_dir, log)]
    if not live:  # loading a checkpoint and the data takes seconds: the final report has them
        sections.append(_best_trial_section(data, figure_dir, log, trust))
    sections.append(_notes_section(data))
    sections.append(_definition_section(data))
    sections = [s for s in sections if s.paragraphs or s.tables or s.figures]

    title = f"Comparison: {data.name}" if data.meta.get("compared") else f"Study {data.name}"
    if live:
        sections.insert(0, Section("Running", [_live_banner(data)], [], []))
    write_text(out / "report.md", markdown(title, sections))
    log(f"wrote {out / 'report.md'}")
    everything = [t for s in sections for t in s.tables] + _raw_tables(data)
    xlsx(out / "tables.xlsx", everything)
    log(f"wrote {out / 'tables.xlsx'}")
    write_text(out / "report.html", html_page(title, sections, refresh_s=LIVE_REFRESH_S if live else None))
    log(f"wrote {out / 'report.html'}")
    log(f"report: {(out / 'report.html').resolve()}")
    return out


def _live_banner(data: StudyData) -> str:
    from datetime import datetime

    finished = int(data.trials["outcome"].isin(FINAL).sum()) \
        if "outcome" in data.trials else 0
    planned = max(int(data.meta.get("planned_trials") or 0), len(data.trials))
    return (f"**running: {finished} of {planned} trials finished, updated {datetime.now():%H:%M}.** This page "
            f"reloads itself every {LIVE_REFRESH_S} s; the final report replaces it when the study ends.")


def _draw(data: StudyData, log, draw, *args) -> list[tuple[Path, str]]:
    """Run one figure function; a figure the study cannot have becomes a note."""
    try:
        with figures.style():
            path = draw(data, *args)
    except Skipped as e:
        data.notes.append(str(e))
        return []
    log(f"wrote {path}")
    caption = (draw.__doc__ or path.stem).strip().split("\n")[0]
    return [(path, caption)]


# ---------------------------------------------------------------- sections

def _definition_section(data: StudyData) -> Section:
    s, meta = data.study, data.meta
    rows = [("name", data.name), ("dataset", s.get("dataset")), ("model", s.get("model")),
            ("metric", f"{data.metric} ({data.mode}); tables rank by {data.target}"),
            ("search", s.get("search")), ("scheduler", s.get("scheduler")), ("epochs", s.get("epochs")),
            ("num_samples", s.get("num_samples")), ("seeds", s.get("seeds")),
            ("varied keys", ", ".join(data.varied_keys) or "none")]
    rows += [(f"space: {k}", _space_value(v)) for k, v in (s.get("space") or {}).items()]
    rows += [("study file", meta.get("study_file")), ("command", meta.get("command"))]
    rows += [(f"round {r['round']} command", r.get("command")) for r in (meta.get("rounds") or [])[:-1]]
    rows += [(f"{c['study']}: folder and command", f"{c['folder']}: {c.get('command')}")
             for c in meta.get("compared") or []]
    rows += [("started", meta.get("started")),
             ("ended", meta.get("ended") or "not yet: the study is running or was interrupted")]
    rows += [(f"version: {k}", v) for k, v in (meta.get("versions") or {}).items()]
    rows += [(f"hardware: {k}", v) for k, v in (meta.get("hardware") or {}).items()]
    table = pd.DataFrame([(k, str(v)) for k, v in rows if v is not None], columns=["setting", "value"])
    return Section("Study definition", tables=[Table("Study definition and provenance", table, sheet="study")])


def _space_value(v) -> str:
    """{'grid_search': [50, 100]} -> grid_search([50, 100]), as the study file wrote it."""
    if isinstance(v, dict) and len(v) == 1:
        (name, args), = v.items()
        return f"{name}({args})"
    return str(v)


def _summary(data: StudyData) -> list[str]:
    """The opening lines: what the study is, and whether it is over."""
    from hpo.rounds import top_of

    s = data.study
    parts = [f"{k} {s[k]}" if k in ("epochs", "seeds") else str(s[k])
             for k in ("dataset", "model", "search", "scheduler", "epochs", "seeds") if s.get(k) is not None]
    parts += [f"metric {data.metric} ({data.mode})", f"varied: {', '.join(data.varied_keys) or 'none'}"]
    text = [" · ".join(parts) + "."]
    if s.get("description"):
        text.append(" ".join(s["description"].split()))
    if "ended" in data.meta and not data.meta["ended"]:
        text.append("Note: the study has not ended (it is running or was interrupted): this report shows the trials"
                    " so far.")
    rounds = data.meta.get("rounds") or []
    if len(rounds) > 1:
        per_round = data.trials["round"].value_counts() if "round" in data.trials else pd.Series(dtype=int)

        def options(r: dict) -> str:
            top = top_of(r.get("command") or "")
            said = [f"--top {top}"] if top else []
            said += [f"--set {', '.join(r['set'])}"] if r.get("set") else []
            return f" ({'; '.join(said)})" if said else ""

        said = "; ".join(f"round {r['round']}: {int(per_round.get(r['round'], 0))} trials{options(r)}"
                         for r in rounds)
        text.append(f"The results pool {len(rounds)} rounds of this study, each added by `python -m hpo.run "
                    f"STUDY.py --extend`: {said}. Every configuration is compared over the seeds of all rounds; "
                    f"the timeline shows round {rounds[-1]['round']}, the latest.")
    if data.meta.get("smoke"):
        text.append("Note: this is a `--smoke` run (at most 2 epochs and a few thousand images per trial):"
                    " it checks the pipeline; its numbers say nothing about the study.")
    return text


def _cut_by_budget(data: StudyData) -> int:
    """Interrupted trials of rounds that their time budget ended (hpo.rounds.budget_ran_out)."""
    from hpo.rounds import budget_ran_out, rounds_of

    if not data.meta or "outcome" not in data.trials:
        return 0
    cut_rounds = [r["round"] for r in rounds_of(data.meta) if budget_ran_out(r)]
    rounds = data.trials["round"] if "round" in data.trials else pd.Series(1, index=data.trials.index)
    return int(((data.trials["outcome"] == "interrupted") & rounds.isin(cut_rounds)).sum())


def _trials_section(data: StudyData, figure_dir: Path, log) -> Section:
    counts = tables.outcome_table(data)
    n = counts.iloc[0].to_dict()
    said = ", ".join(f"{v} {o.replace('_', ' ')}" for o, v in n.items() if v and o != "total")
    text = _summary(data) + [f"{n['total']} trials: {said or 'none has reported yet'}."]
    finished = len(data.finished)
    text.append(f"The tables below count the {finished} finished trials (completed, stopped early or diverged)"
                " with a value of the metric.")
    unfinished = n.get("running", 0) + n.get("pending", 0) + n.get("interrupted", 0)
    cut = _cut_by_budget(data)
    if cut:
        unfinished -= cut
        text.append(f"Note: {cut} trials were cut by their round's time budget (`time_budget_min`): their numbers "
                    "are not final and are left out of the tables (their epochs so far are in the learning curves).")
    if unfinished:
        text.append(f"Note: {unfinished} trials are running, pending or interrupted: their numbers are not final and"
                    " are left out of the tables (their epochs so far are in the learning curves). Run the analysis"
                    " again when the study ends (an interrupted study continues with `python -m hpo.run STUDY.py"
                    " --resume`).")
    out = [Table("Trials by outcome", counts, sheet="outcomes")]
    problems = tables.problem_table(data)
    if not problems.empty:
        out.append(Table("Failed and diverged trials", problems, "With the first line of each error.",
                         sheet="failed trials"))
    return Section("Overview", text + _in_flight(data), out, _draw(data, log, figures.timeline, figure_dir))


def _in_flight(data: StudyData) -> list[str]:
    """How busy the trial slots were (trials.csv's started_s/ended_s, study.json's slots), and why when idle."""
    try:
        o = tables.occupancy(data, tables.trial_times(data))
    except Skipped:
        return []  # the timeline figure's note says so
    if math.isnan(o["mean"]):
        return []
    slots = f" of {o['slots']} slots" if o["slots"] else " (slots unknown: study.json has none)"
    used = "" if o["utilisation"] is None else f" (utilisation {o['utilisation']:.0%})"
    text = [f"Trials in flight: mean {o['mean']:.1f}{slots}{used}; at most {o['peak']} at once, over"
            f" {fmt.number('time_s', o['span_s'])} s from the run's start to the latest start or end in trials.csv."]
    if o["utilisation"] is not None and o["utilisation"] < LOW_UTILISATION:
        ray_trials = tables.ray_trial_ids(tables.latest_round_rows(data.trials)).nunique()
        text.append(f"Note: the trial slots were busy {o['utilisation']:.0%} of the time. Likely reasons: trials"
                    " shorter than a Ray actor's start-up (a few seconds; the median trial here ran"
                    f" {fmt.number('time_s', o['median_s'])} s), fewer trials than slots ({ray_trials}"
                    f" trials for {o['slots'] or 'an unknown number of'} slots), or `--max-concurrent` below the"
                    " slots. The timeline figure shows when the slots stood idle.")
    return text


def _configs_section(data: StudyData, table: pd.DataFrame, pairwise: pd.DataFrame) -> Section:
    if table.empty:
        return Section("Configurations", ["No finished trial yet: no comparison."])
    text = [f"One row per configuration (its seeds grouped), best first by the mean of {data.target}"
            f" ({data.mode}). Each cell: mean ± std over seeds (for accuracies in percentage points), and"
            f" below it the 95% confidence interval of the mean (Student t over seeds).",
            f"Every two configurations with 2 or more seeds are compared on {data.target} by {stats.TEST_NAME},"
            f" which holds the family-wise error rate at {stats.ALPHA:.0%} over all the pairs: when no"
            f" configuration differs, the chance that any pair is called different is at most {stats.ALPHA:.0%}."
            " **letters**: configurations that share a letter do not differ significantly. Against the best:"
            f" **tied** means p ≥ {stats.ALPHA} (the difference is within seed-to-seed noise), **worse** means"
            f" p < {stats.ALPHA}; **n=1, untested** means one side has a single seed, so no test is possible."
            " **difference from the best**: the configuration's mean minus the best's, with its 95% Welch"
            " interval (unequal variances; for this pair alone, not adjusted for the others, so it may exclude 0"
            " where the adjusted test says tied); **Hedges' g**: that difference in pooled seed-to-seed standard"
            " deviations, corrected for few seeds.",
            _conclusion(data, table)]
    power = tables.power_summary(data, table)
    two = int((table["n"] == 2).sum())
    if two:
        text.append(f"Note: {two} configuration(s) have only 2 seeds: a comparison on 2 seeds has little power"
                    f" (2 seeds per side find a difference reliably only above"
                    f" {fmt.amount(data.target, stats.detectable_difference(power['std'], 2))}) and a wide"
                    " interval. Use 3 or more seeds.")
    uneven = tables.uneven_epochs(data)
    if len(uneven):
        shown = "; ".join(f"{fmt.settings(data.varied_keys, r)}: {int(r['min'])} to {int(r['max'])} epochs"
                          for _, r in uneven.head(3).iterrows())
        text.append(f"Note: in {len(uneven)} configuration(s) ASHA stopped some seeds and not others ({shown}"
                    f"{' ...' if len(uneven) > 3 else ''}): their means pool seeds that ran fewer epochs with "
                    "seeds that ran more. Seed groups (a configuration's seeds one trial, the default with ASHA) "
                    "stop a configuration's seeds together.")
    metrics = tables.summary_metrics(data)
    first = [data.target] + [m for m in metrics if not fmt.is_loss(m) and m != data.target]
    second = [m for m in metrics if fmt.is_loss(m) and m != data.target]

    def columns(ms):
        return data.varied_keys + ["n"] + [f"{m} {f}" for m in ms for f in tables.STAT_FIELDS]

    versus = ["letters", "verdict", "p_value"] + [f"{data.target} diff{f}" for f in ("", " ci_low", " ci_high")]
    out = [Table("Per configuration: accuracy", table, sheet="configurations",
                 show=columns(first) + versus + ["hedges_g"], rows=MAX_ROWS, note=_power_text(data, table, power)),
           Table("Per configuration: loss, time and size", table, "Same rows, same order.", sheet=None,
                 show=columns(second) + [f"{x} mean" for x in tables.EXTRAS] + ["verdict"], rows=MAX_ROWS)]
    if len(pairwise) >= 2:
        shown = list(pairwise.columns[:MAX_ROWS + 1])
        cut = f" The first {MAX_ROWS} columns; tables.xlsx has them all." if len(pairwise) > MAX_ROWS else ""
        out.append(Table("Pairwise p-values", pairwise,
                         f"By {stats.TEST_NAME}, for every two configurations with 2+ seeds, in the order"
                         f" above. Already adjusted for the number of pairs: below {stats.ALPHA} means they"
                         f" differ.{cut}", sheet="pairwise p-values", show=shown, rows=MAX_ROWS, p_values=True))
    return Section("Configurations", text, out)


def _compared_section(data: StudyData) -> Section:
    """A comparison's studies, and what differs between them beyond their configurations."""
    compared = pd.DataFrame(data.meta["compared"])
    counts = data.trials.groupby("config/study").size()
    compared["trials"] = compared["study"].map(counts).fillna(0).astype(int)
    text = [f"{len(compared)} studies, each configuration of each study a row of the tables below (the key `study`"
            " first): the same tests compare every configuration with every other, across studies too."]
    differences = data.meta.get("differences") or []
    if differences:
        text.append("Note: the studies differ in what can explain a difference between them, not only in their"
                    " configurations: " + "; ".join(differences) + ".")
    else:
        text.append("They share dataset, model, epochs, seeds, search, data, hardware and package versions.")
    return Section("Studies compared", text, [Table("Studies compared", compared, sheet="studies")])


def _next_section(data: StudyData, table: pd.DataFrame) -> Section:
    """What to run next, from the numbers above (analysis/advice.py); each piece with its reason."""
    if data.meta.get("compared"):  # its commands would be each study's: each study's own report has them
        return Section("What to run next")
    found = advice.advise(data, table, tables.power_summary(data, table))
    if data.meta.get("smoke") or data.finished.empty:
        return Section("What to run next")  # nothing: a smoke run's numbers say nothing
    if not found:
        return Section("What to run next", ["Nothing the numbers ask for: the runner-up is told apart from the best "
                                            "(or is equally good), and no best value lies at the edge of what was "
                                            "searched."])
    text = [f"{i}. {a.reason}" + (f" `{a.command}`" if a.command else "") for i, a in enumerate(found, 1)]
    return Section("What to run next", text)


def _power_text(data: StudyData, table: pd.DataFrame, power: dict) -> str:
    """Under the table: the smallest difference the study's seeds find, and the seeds the runner-up would need."""
    if pd.isna(power["std"]):
        return ("Seeds: no configuration has 2 or more seeds, so the seed-to-seed noise is unknown and no"
                " difference can be tested. Set `seeds` to 3 or more in the study.")
    seeds, target = power["seeds"], data.target
    text = (f"Seeds: the seed-to-seed std of {target}, pooled over the {power['configurations']} configuration(s)"
            f" with 2+ seeds, is {fmt.amount(data.target, power['std'])}.")
    if seeds >= 2:
        detectable = fmt.amount(data.target, power["detectable"])
        text += (f" With {seeds} seeds per configuration, a true difference of {detectable}"
                 f" or more is found {stats.POWER:.0%} of the time (one pair, two-sided, α = {stats.ALPHA}; t"
                 f" approximation: (t(0.975, 2n−2) + t(0.80, 2n−2)) · std · √(2/n), n = {seeds}); smaller true"
                 " differences mostly go unseen, and the Games-Howell adjustment over all pairs needs more.")
    if len(table) >= 2:
        runner = f"The runner-up ({fmt.settings(data.varied_keys, table.iloc[1], data.name)})"
        needed, gap = power["runner_up_seeds"], fmt.amount(data.target, power["runner_up_diff"])
        if power["runner_up_diff"] == 0:
            text += f" {runner} has the best's mean: no number of seeds separates them."
        elif needed is None:
            text += (f" {runner} is {gap} from the best: more than 1000 seeds per configuration would be needed"
                     " to separate them.")
        else:
            text += (f" {runner} is {gap} from the best: {needed} seeds per"
                     f" configuration would separate them with {stats.POWER:.0%} power (with the two's own"
                     f" seed-to-seed std, {fmt.amount(data.target, power['runner_up_std'])}).")
    return text


def _conclusion(data: StudyData, table: pd.DataFrame) -> str:
    best = table.iloc[0]
    target = data.target
    seeds = f"{int(best['n'])} seed{'s' if best['n'] > 1 else ''}"
    spread = "" if pd.isna(best[f"{target} std"]) else f" ± {fmt.spread(target, best[f'{target} std'])}"
    value = fmt.number(target, best[f"{target} mean"])
    text = f"Best: **{fmt.settings(data.varied_keys, best, data.name)}**, {target} {value}{spread} over {seeds}."
    if len(table) == 1:
        return text
    verdicts = table["verdict"].iloc[1:]
    tied = [fmt.settings(data.varied_keys, r, data.name) for _, r in table.iloc[1:].iterrows()
            if r["verdict"] == "tied"]
    if tied:
        text += f" Not significantly different from it: {'; '.join(tied)}."
    if (verdicts == "worse").any():
        text += f" Significantly worse: {int((verdicts == 'worse').sum())} configuration(s)."
    untested = int((verdicts == "n=1, untested").sum())
    if untested:
        text += (f" {untested} configuration(s) could not be tested (a single seed): with one seed, a difference"
                 f" cannot be told from noise; set `seeds` to 3 or more in the study.")
    return text


def _effects_section(data: StudyData, configs: pd.DataFrame, figure_dir: Path, log) -> Section:
    section = Section(f"Effect of each varied key on {data.target}")
    if data.search and not data.search.samples and len(data.varied_keys) >= 2:  # a full grid
        section.paragraphs.append(
            f"The marginal effect of each key: {data.target} at each of its levels, over every value of the other"
            " keys and every seed (mean ± std, 95% CI); each level compared with the best level as above.")
        for key, table in tables.factor_tables(data).items():
            section.tables.append(Table(f"{data.target} by {key}", table, sheet=f"by {key}"))
    section.figures += _draw(data, log, figures.factor_effects, configs, figure_dir)
    section.figures += _draw(data, log, figures.parallel_coordinates, figure_dir)
    return section


def _curves_section(data: StudyData, figure_dir: Path, log) -> Section:
    return Section("Learning curves", figures=_draw(data, log, figures.learning_curves, figure_dir))


def _cost_section(data: StudyData, figure_dir: Path, log) -> Section:
    section = Section(f"{data.target} against cost")
    table = tables.pareto_table(data)
    if table.empty:
        return section
    section.paragraphs.append(
        f"Each configuration's mean {data.target} against its parameter count and its training time per epoch"
        " (each trial's time_s / epochs_run, averaged over seeds; it depends on the machine and on the trials"
        " that ran beside it). **front: params** and **front: time** mark the Pareto front: no other"
        f" configuration has as good or a better {data.target} at the same or a lower cost. The means are"
        " compared as they are, without the tests above: a configuration on the front may be tied with others.")
    if len(data.objectives) > 1:
        said = ", ".join(f"{m} ({mode})" for m, mode in data.objectives)
        section.paragraphs.append(
            f"This is a multi-objective study: Optuna searched for {said} together (OptunaSearch with several"
            " metrics), and its record of the Pareto front it found is in optuna.journal (optuna.load_study(...)"
            ".best_trials). The table ranks by the first objective; **front: params** is the front against the"
            " parameter count.")
    section.tables.append(Table(f"{data.target} against cost", table, "Best first.", sheet="pareto front",
                                rows=MAX_ROWS))
    section.figures += _draw(data, log, figures.pareto_fronts, table, figure_dir)
    return section


def _search_section(data: StudyData, figure_dir: Path, log) -> Section:
    section = Section("The search")
    asha = data.stops_early
    if asha and data.search and data.search.samples:
        section.paragraphs.append(
            "Note: ASHA stops weak trials at its rungs, and a stopped trial's numbers come from fewer epochs than"
            " a finished one's: its metric is not comparable with theirs. The top trials below are therefore"
            " ranked by the epochs they reached (the highest rung first), then by the metric.")
        learns = ("TPE ranks it by its last value, below every completed trial, instead of taking an early value"
                  " for a final one" if data.search.learns else "the random sampler does not learn from values")
        told = (f"Optuna is told that a trial ASHA stopped was PRUNED, with its value at each epoch it ran: {learns}."
                if isinstance(data.study.get("metric"), str) else
                "A multi-objective search is told a stopped trial's last values as if it had finished.")
        section.paragraphs.append(f"Note: {told}")
    ranked = "the epochs reached (ASHA's rung, the highest first), then " if asha else ""
    section.tables.append(Table(f"Top {tables.TOP_K} trials", tables.top_trials(data),
                                f"by {ranked}{data.target} ({data.mode}).", sheet="top trials"))
    if asha or (data.trials["outcome"] == "stopped_early").any():
        section.tables.append(Table("Trials stopped by ASHA, by rung", tables.rung_table(data),
                                    "The epoch each stopped trial reached, and its best metric.", sheet="asha rungs"))
        section.figures += _draw(data, log, figures.asha_survival, figure_dir)
    try:
        importance, evaluator = tables.importance_table(data)
    except Skipped as e:
        data.notes.append(str(e))
        return section
    apart = " A key that only some trials set is evaluated apart, on those trials: its importance is among" \
            " them, not part of the sum." if (importance["trials"] < len(data.finished)).any() else ""
    section.tables.append(Table("Parameter importance", importance,
                                f"{evaluator}; for {data.target}. Over all finished trials the importances sum to"
                                f" 1.{apart}", sheet="importance"))
    section.figures += _draw(data, log, figures.importance_bars, importance, evaluator, figure_dir)
    return section


def _best_trial_section(data: StudyData, figure_dir: Path, log, trust: bool) -> Section:
    section = Section("The best trial's predictions and feature maps")
    try:
        loaded = samples.load_best(data, trust)
    except Skipped as e:
        data.notes.append(str(e))
        return section
    section.figures += _draw(data, log, samples.predictions, loaded, figure_dir)
    section.figures += _draw(data, log, samples.feature_maps, loaded, figure_dir)
    return section


def _notes_section(data: StudyData) -> Section:
    return Section("Notes", [f"Note: {n}" for n in data.notes])


def _raw_tables(data: StudyData) -> list[Table]:
    """trials.csv, and the learning curves averaged over seeds (what the seeds pasted into Excel by hand)."""
    out = [Table("All trials", data.trials, sheet="trials")]
    metrics = [m for m, _ in figures.CURVES + (("test_acc", ""), ("test_loss", "")) if m in data.epochs]
    if metrics and "epoch" in data.epochs:
        keys = [c for c in data.key_columns if c in data.epochs]
        curves = data.epochs.groupby(keys + ["epoch"], dropna=False)[metrics].mean().reset_index()
        out.append(Table("Curves", curves.rename(columns=lambda c: c.removeprefix("config/")),
                         sheet="curves (mean over seeds)"))
    return out

