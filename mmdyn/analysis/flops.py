"""Analytic FLOP formulas of mmdyn.

Convention
----------
**One FLOP is one multiply-add (MAC).** This is the unit the PVT, PVTv2, DeiT and ViT papers
call "FLOPs" (e.g. DeiT-S: 4.6 G at 224x224). ``torch.utils.flop_counter.FlopCounterMode``
counts two per multiply-add, so its figures are twice ours.

What is counted, and what is not:

* counted: every linear layer (``tokens * in * out``), every convolution, depth-wise ones
  included (``out_h * out_w * k_h * k_w * in / groups * out``), the patch embeddings (a
  convolution), the spatial-reduction convolution of keys/values, and the two attention
  products ``q @ k^T`` and ``attn @ v`` (``queries * keys * head_dim`` each, summed over heads:
  ``queries * keys * embed_dims``);
* not counted: biases, normalisation layers, activations, softmax, the attention scale,
  dropout, residual additions, pooling and interpolation of position embeddings. Together
  they are well under 1 % of the figures above, and leaving them out is what makes our counts
  match the published numbers (ViT-S/16 4.60 G, PVTv2-B1 2.1 G, PVTv2-B2 4.0 G, PVT-Small
  3.8 G at 224x224) and makes ``FlopCounterMode`` (which also ignores them) an exact check.

All functions are pure functions of dimensions and token counts. Token counts may be Python
ints (the result is then an exact ``int``), floats (e.g. average counts) or tensors (for example per-image counts ``[B]`` of a
dynamic forward; the result is then a float64 tensor of the same shape), so the same formulas
give static figures, realised per-image figures and differentiable expected costs.
"""
import functools
from typing import Optional, Sequence, Tuple, Union

import torch

Count = Union[int, float, torch.Tensor]

__all__ = [
    'linear_flops', 'conv2d_flops', 'conv2d_out_shape', 'dwconv_flops', 'patch_embed_flops',
    'attention_matmul_flops', 'attention_flops', 'sr_out_shape', 'sr_num_keys', 'sr_flops',
    'mlp_flops', 'mixffn_flops', 'to_int', 'grid_resize_flops', 'relation_upsample_flops',
    'resize_is_copy',
    'CountPolynomial'
]


def _pair(x) -> Tuple[int, int]:
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f'expected an int or a pair, got {x!r}')
        return int(x[0]), int(x[1])
    return int(x), int(x)


def _num(x: Count) -> Count:
    """Tensors become float64 (exact for counts below 2**53); numbers pass through."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return x


def to_int(x: Count) -> Count:
    """A whole Python float becomes an ``int``; tensors and fractional floats (average token
    counts) are returned as they are."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def linear_flops(num_tokens: Count, in_features: int, out_features: int) -> Count:
    """A linear layer applied to ``num_tokens`` tokens (bias not counted)."""
    return to_int(_num(num_tokens) * in_features * out_features)


def conv2d_out_shape(in_hw: Sequence[int], kernel_size, stride=1, padding=0,
                     dilation=1) -> Tuple[int, int]:
    """Output size of a 2-D convolution (PyTorch's floor rule)."""
    h, w = _pair(in_hw)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return out_h, out_w


def conv2d_flops(out_hw: Sequence[int], in_channels: int, out_channels: int, kernel_size,
                 groups: int = 1) -> int:
    """A 2-D convolution producing an ``out_hw`` map (bias not counted)."""
    oh, ow = _pair(out_hw)
    kh, kw = _pair(kernel_size)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f'channels ({in_channels}, {out_channels}) not divisible by groups '
                         f'{groups}')
    return oh * ow * kh * kw * (in_channels // groups) * out_channels


def dwconv_flops(num_tokens: Count, channels: int, kernel_size=3) -> Count:
    """A depth-wise convolution evaluated at ``num_tokens`` output positions."""
    kh, kw = _pair(kernel_size)
    return to_int(_num(num_tokens) * channels * kh * kw)


def patch_embed_flops(in_hw: Sequence[int], in_channels: int, embed_dims: int, kernel_size,
                      stride, padding=0) -> int:
    """Convolutional patch embedding (PVT, PVTv2, ViT) of an ``in_hw`` input.

    ``in_hw`` is the size the convolution sees (after any adaptive padding).
    """
    out_hw = conv2d_out_shape(in_hw, kernel_size, stride, padding)
    return conv2d_flops(out_hw, in_channels, embed_dims, kernel_size)


def attention_matmul_flops(num_queries: Count, num_keys: Count, embed_dims: int) -> Count:
    """``q @ k^T`` plus ``attn @ v`` over all heads: ``2 * Nq * Nk * C``."""
    return to_int(2 * _num(num_queries) * _num(num_keys) * embed_dims)


def attention_flops(num_queries: Count, num_keys: Count, embed_dims: int) -> Count:
    """Multi-head attention without the spatial reduction.

    q projection on the queries, k and v projections on the ``num_keys`` key tokens (after
    any reduction), the two attention products and the output projection on the queries.
    """
    nq, nk = _num(num_queries), _num(num_keys)
    c2 = embed_dims * embed_dims
    return to_int(2 * nq * c2 + 2 * nk * c2 + 2 * nq * nk * embed_dims)


def sr_out_shape(hw_shape: Sequence[int], sr_ratio: int, linear: bool = False,
                 pool_size: int = 7) -> Tuple[int, int]:
    """Grid of keys/values after the spatial reduction.

    PVT conv SR (kernel = stride = ``sr_ratio``, no padding) floors the grid; PVTv2's linear SR
    pools to ``pool_size x pool_size`` whatever the input; no reduction keeps the grid.
    """
    h, w = _pair(hw_shape)
    if linear:
        return pool_size, pool_size
    if sr_ratio > 1:
        return h // sr_ratio, w // sr_ratio
    return h, w


def sr_num_keys(hw_shape: Sequence[int], sr_ratio: int, linear: bool = False,
                pool_size: int = 7) -> int:
    h, w = sr_out_shape(hw_shape, sr_ratio, linear, pool_size)
    return h * w


def sr_flops(hw_shape: Sequence[int], embed_dims: int, sr_ratio: int, linear: bool = False,
             pool_size: int = 7) -> int:
    """Spatial reduction of keys/values of a full ``hw_shape`` map.

    Conv SR: a ``sr x sr`` stride-``sr`` convolution, ``H/sr * W/sr * sr^2 * C^2``. Linear SR:
    the average pooling is not counted; the 1x1 convolution costs ``pool^2 * C^2``.
    """
    if linear:
        return conv2d_flops((pool_size, pool_size), embed_dims, embed_dims, 1)
    if sr_ratio > 1:
        out = sr_out_shape(hw_shape, sr_ratio)
        return conv2d_flops(out, embed_dims, embed_dims, sr_ratio)
    return 0


def mlp_flops(num_tokens: Count, embed_dims: int, hidden_dims: int,
              in_dims: Optional[int] = None) -> Count:
    """Two-layer MLP (``fc1``, ``fc2``): ``fc1`` reads ``in_dims`` channels (default
    ``embed_dims``, e.g. wider when extra features are concatenated to the FFN input), ``fc2``
    writes ``embed_dims``."""
    if in_dims is None:
        return to_int(2 * _num(num_tokens) * embed_dims * hidden_dims)
    return to_int(_num(num_tokens) * hidden_dims * (in_dims + embed_dims))


def mixffn_flops(num_tokens: Count, embed_dims: int, hidden_dims: int, kernel_size=3,
                 num_dw_tokens: Count = None) -> Count:
    """PVTv2's FFN: ``fc1``, a depth-wise ``k x k`` convolution, ``fc2``.

    The depth-wise convolution is evaluated at ``num_dw_tokens`` positions (default: the
    ``num_tokens`` tokens the linears see).
    """
    if num_dw_tokens is None:
        num_dw_tokens = num_tokens
    return mlp_flops(num_tokens, embed_dims, hidden_dims) + dwconv_flops(
        num_dw_tokens, hidden_dims, kernel_size)


@functools.lru_cache(maxsize=None)
def resize_is_copy(n: int, new_n: int) -> bool:
    """Whether DVT's resize of one axis from ``n`` to ``new_n`` (nearest up-sampling to ``2 n``,
    then adaptive average pooling to ``new_n``) copies an input entry to every output entry
    (each pooling window covers copies of one entry, e.g. ``new_n = 2 n`` or ``new_n = n``):
    then it runs as an index, not a matrix product."""
    n, new_n = int(n), int(new_n)
    for i in range(new_n):
        start, end = (i * 2 * n) // new_n, -((-(i + 1) * 2 * n) // new_n)
        if start // 2 != (end - 1) // 2:
            return False
    return True


def grid_resize_flops(old_hw: Sequence[int], new_hw: Sequence[int], num_maps: Count = 1) -> Count:
    """Resizing ``num_maps`` ``[h, w]`` maps to ``[H, W]`` one axis after the other: a ``[H, h]``
    matrix product on the rows (``H * h * w`` per map), then a ``[W, w]`` one on the columns
    (``H * W * w``); an axis whose resize is a copy (:func:`resize_is_copy`) runs as an index
    and costs 0. 0 when the grid does not change. This is how DVT resizes its reused features
    and relations (nearest x2 then adaptive average pooling, both linear and separable)."""
    h, w = _pair(old_hw)
    H, W = _pair(new_hw)
    if (h, w) == (H, W):
        return 0
    rows = 0 if resize_is_copy(h, H) else H * h * w
    cols = 0 if resize_is_copy(w, W) else H * W * w
    return to_int(_num(num_maps) * (rows + cols))


def relation_upsample_flops(channels: int, old_hw: Sequence[int],
                            new_hw: Sequence[int]) -> Count:
    """DVT's 2-D aware up-sampling of ``channels`` attention-logit maps over ``1 + h*w`` tokens
    (a class token first) to ``1 + H*W``: the spatial keys of each of the ``1 + h*w`` old query
    rows are resized on the grid, then the spatial queries of each of the ``1 + H*W`` new key
    columns (:func:`grid_resize_flops` per row / column)."""
    h, w = _pair(old_hw)
    H, W = _pair(new_hw)
    return grid_resize_flops(old_hw, new_hw, channels * (1 + h * w + 1 + H * W))


class CountPolynomial:
    """FLOPs as a polynomial of degree at most 2 in a token count, ``a + b n + c n^2``.

    Every block formula here is one (projections and MLPs are linear in the tokens, attention
    among them quadratic). A dynamic forward evaluates its blocks' FLOPs per image on token
    count tensors; through the full formulas that is a dozen tiny tensor operations per block
    (on a GPU at small batch, a dozen kernel launches), through the polynomial two to four for
    all blocks that share a count. :meth:`fit` reads the coefficients from the formula at Python
    integers, so they are exact, and checks that the formula is quadratic.

    Polynomials add (the blocks of a stage on the same count); calling one on an ``int`` gives
    an ``int``, on a float a float, on a tensor a float64 tensor (differentiable).
    """

    __slots__ = ('a', 'b', 'c')

    def __init__(self, a=0, b=0, c=0):
        self.a, self.b, self.c = to_int(a), to_int(b), to_int(c)

    @classmethod
    def fit(cls, fn) -> 'CountPolynomial':
        """The polynomial of ``fn(n)``, a FLOP formula of one token count (Python numbers in and
        out); ``ValueError`` when ``fn`` is not a polynomial of degree <= 2 in ``n``."""
        f = [fn(n) for n in (0, 1, 2)]
        c = (f[2] - 2 * f[1] + f[0]) / 2
        poly = cls(f[0], f[1] - f[0] - c, c)
        for n in (3, 5):
            if poly(n) != fn(n):
                raise ValueError(f'{fn!r} is not a polynomial of degree <= 2 in the token '
                                 f'count: {fn(n)} at {n}, the fit gives {poly(n)}')
        return poly

    def __add__(self, other: 'CountPolynomial') -> 'CountPolynomial':
        return CountPolynomial(self.a + other.a, self.b + other.b, self.c + other.c)

    def __radd__(self, other):
        if other == 0:  # sum()
            return self
        return NotImplemented

    def __call__(self, n: Count) -> Count:
        if isinstance(n, torch.Tensor):
            n = n.to(torch.float64)
            out = n * self.b if self.c == 0 else (n * self.c + self.b) * n
            return out + self.a
        return to_int(self.a + self.b * n + self.c * n * n)

    def __repr__(self):
        return f'CountPolynomial(a={self.a}, b={self.b}, c={self.c})'
