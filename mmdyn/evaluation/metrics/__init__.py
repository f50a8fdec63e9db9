from .complexity_metric import ComplexityMetric

__all__ = ['ComplexityMetric']
