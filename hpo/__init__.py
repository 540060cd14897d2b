"""hpo-studies: hyperparameter studies of image classifiers on Ray Tune."""

from hpo import env  # noqa: F401  first: settings torch and Ray read when they are imported
from hpo.errors import HpoError
from hpo.study import Study, variants

__all__ = ["HpoError", "Study", "variants"]
