"""A Ray Tune searcher wrapper for --extend rounds of a sampled search (hpo/rounds.py). Imported only once
Ray runs (hpo.run.build_tuner): it subclasses Ray's Searcher."""

from __future__ import annotations

from ray.tune.search.searcher import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible


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
