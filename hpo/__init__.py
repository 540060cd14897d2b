"""hpo-studies: hyperparameter studies of image classifiers on Ray Tune."""

from hpo.errors import HpoError
from hpo.study import Study, variants

__all__ = ["HpoError", "Study", "variants"]
