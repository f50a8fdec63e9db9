"""Inference helpers: build an mmdet / mmseg / mmpretrain model from an mmdyn config with the
per-image dynamic records switched on, run it, and read the realised FLOPs back."""
from .inference import (codebase_of, dynamic_records, enable_dynamic_records, inference_model,
                        init_model)

__all__ = ['codebase_of', 'dynamic_records', 'enable_dynamic_records', 'inference_model',
           'init_model']
