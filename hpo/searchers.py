"""Searchers and a scheduler of Ray Tune's kind made for hpo: Optuna told the truth about stopped trials, the
fixed points first of an --extend round (hpo/rounds.py), and ASHA that leaves such a round's fixed epochs
alone. Imported only once Ray runs (hpo.registry's builders, hpo.run.build_tuner): they subclass Ray's."""

from __future__ import annotations

import pickle

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.searcher import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible


class PrunedWhenStopped(OptunaSearch):
    """Ray's OptunaSearch, except that a trial stopped before its last epoch (by ASHA at a rung, or by the
    study's time budget) is told to Optuna as PRUNED instead of COMPLETE with its last value. Optuna's TPE
    ranks a pruned trial by the last intermediate value it reported (its per-epoch values reach Optuna
    through on_trial_result), below every completed trial, instead of taking an early accuracy for the
    final one; the journal and optuna-dashboard show it as pruned. A failed trial stays FAIL and a finished
    one COMPLETE, as Ray tells them. Multi-objective studies keep Ray's behaviour (Optuna prunes only
    single-objective trials). Reads OptunaSearch's own trial records (`_ot_trials`, `_ot_study`,
    `_completed_trials`: private, verified with Ray 2.60; hpo/ray_workarounds.py lists it)."""

    def __init__(self, *args, epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs = epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        known = trial_id in self._ot_trials and trial_id not in self._completed_trials
        single = not isinstance(self.metric, list)
        if known and single and not error and result and "training_iteration" in result:
            # The result a scheduler stops a trial on reaches the searcher here only, not through
            # on_trial_result: its epoch's value is an intermediate value like the others.
            self._ot_trials[trial_id].report(result[self.metric], result["training_iteration"])
        reached = (result or {}).get("training_iteration", self.epochs)
        if error or not result or not single or reached >= self.epochs or not known:
            return super().on_trial_complete(trial_id, result=result, error=error)
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


class PointsFirst(Searcher):
    """Trains the given configurations first (more seeds of configurations an earlier round sampled), then
    the wrapped searcher's suggestions (new configurations). The fixed points' results are not the wrapped
    searcher's to learn from: it never suggested them. A wrapper as Ray's own Repeater is (a `searcher`
    attribute, its own state in get_state), so Ray saves and restores both for a --resume."""

    def __init__(self, searcher: Searcher, points: list[dict]):
        self.searcher = searcher
        self.points = [dict(p) for p in points]
        self.fixed: set[str] = set()  # trial ids given a fixed point
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode,
                                                           config, **spec)

    def suggest(self, trial_id: str):
        if self.points:
            self.fixed.add(trial_id)
            return self.points.pop(0)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.fixed:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.fixed:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class NoNewConfigurations(Searcher):
    """The searcher under PointsFirst in a round that draws no new configurations (a grid's, or --top's):
    nothing to suggest. Saves an empty state, so that Ray's --resume finds the file it looks for."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric, mode
        return True

    def suggest(self, trial_id: str):
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({}, f)

    def restore(self, checkpoint_path: str) -> None:
        pass


class AshaBesideFixedEpochs(ASHAScheduler):
    """Ray's ASHA, except for the trials of an --extend round with fixed epochs (`fixed_key` in their config,
    hpo.registry.EPOCHS_KEY: new seeds of a configuration an earlier round judged): it neither stops them nor
    counts them at its rungs. They end by themselves after as many epochs as ASHA let that configuration's
    earlier seeds train, so that its seeds are pooled on equal terms; the round's new configurations meet
    ASHA among themselves."""

    def __init__(self, *args, fixed_key: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_key = fixed_key

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.config.get(self.fixed_key):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.config.get(self.fixed_key):  # Ray's would record its last result at the rungs it passed
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)
