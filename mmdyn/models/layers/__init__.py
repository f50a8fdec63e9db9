from .gates import (GateOutput, GumbelSigmoidGate, GumbelSoftmaxGate,  # noqa: F401
                    binary_eval, categorical_eval, gumbel_sigmoid_st, gumbel_softmax_st,
                    straight_through)
from .grad_scale import scale_grad  # noqa: F401
from .region_pool import (region_extents, region_grid, region_ids,  # noqa: F401
                          region_pool, region_pool_tokens)
from .token_sets import (TokenSet, gather_tokens, make_token_set,  # noqa: F401
                         padded_attention, scatter_tokens, select_tokens)
from .attention import (SRAttention, channels_last_convs_, explicit_attention,  # noqa: F401
                        nchw_to_nlc, nlc_to_nchw)
from .embed import PatchEmbed, overlap_patch_embed, resize_pos_embed  # noqa: F401
from .ffn import MLP, MixFFN  # noqa: F401
from .transformer_blocks import (PVTBlock, TransformerBlock, ViTBlock,  # noqa: F401
                                 drop_path_rates)
