from .complexity_metric import ComplexityMetric
from .dump_predictions import DumpPredictions

__all__ = ['ComplexityMetric', 'DumpPredictions']
