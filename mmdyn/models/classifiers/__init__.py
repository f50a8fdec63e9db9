
from .dvt import DVTClassifier  # noqa: F401
