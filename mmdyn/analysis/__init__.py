"""Complexity counting of mmdyn models (analytic FLOPs; one FLOP = one multiply-add)."""
from . import flops
from .flops import (attention_flops, attention_matmul_flops, conv2d_flops, conv2d_out_shape,
                    dwconv_flops, linear_flops, mixffn_flops, mlp_flops, patch_embed_flops,
                    sr_flops, sr_num_keys, sr_out_shape, to_int)

__all__ = [
    'flops', 'attention_flops', 'attention_matmul_flops', 'conv2d_flops', 'conv2d_out_shape',
    'dwconv_flops', 'linear_flops', 'mixffn_flops', 'mlp_flops', 'patch_embed_flops',
    'sr_flops', 'sr_num_keys', 'sr_out_shape', 'to_int'
]
from .complexity import model_complexity  # noqa: E402  (whole-model counting)
__all__ += ['model_complexity']
