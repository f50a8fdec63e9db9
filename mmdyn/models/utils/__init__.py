from .dynamic import (DynamicModuleMixin, collect_dynamic_records, evenly_spaced,
                      find_dynamic_modules, full_compute, override_decisions, unwrap_model)

__all__ = [
    'DynamicModuleMixin', 'collect_dynamic_records', 'evenly_spaced', 'find_dynamic_modules',
    'full_compute', 'override_decisions', 'unwrap_model'
]
