from .dynamic import (DynamicModuleMixin, collect_dynamic_records, find_dynamic_modules,
                      full_compute, unwrap_model)

__all__ = [
    'DynamicModuleMixin', 'collect_dynamic_records', 'find_dynamic_modules', 'full_compute',
    'unwrap_model'
]
