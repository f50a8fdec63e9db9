"""Per-image variable-length token subsets as padded batches.

A boolean ``keep: [B, N]`` selects a different number of tokens in every image.
:func:`make_token_set` turns it into a :class:`TokenSet`: for each image the original positions
of its kept tokens in their original (stable) order, padded to the longest set of the batch, with
a validity mask and per-image lengths. :func:`gather_tokens` builds the padded ``[B, L, ...]``
batch, :func:`scatter_tokens` writes results back to ``[B, N, ...]`` in the original order, and
:func:`padded_attention` runs :func:`torch.nn.functional.scaled_dot_product_attention` over padded
sets with a key padding mask.

Padding slots of ``TokenSet.index`` point at the image's *non-kept* positions (each row of
``index`` is a prefix of a permutation of ``0..N-1``), so every index is valid for ``gather`` and
no two slots of a row share a position; gathered padding rows are zeroed.

Every image computes exactly what it would compute alone with only its kept tokens: padding keys
are masked out of the softmax, padding queries give zeros, an image with no kept key gives zeros
(SDPA would give NaN there).
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class TokenSet(NamedTuple):
    """Kept tokens of every image of a batch.

    Attributes:
        index (Tensor): ``Long[B, L]``, original positions; the first ``lengths[b]`` entries of
            row ``b`` are the kept positions in increasing order, the rest are padding slots.
        mask (Tensor): ``Bool[B, L]``, True for real (kept) slots.
        lengths (Tensor): ``Long[B]``, number of kept tokens per image.
        num_tokens (int): ``N``, the length of the full token sequence.
        padded (bool): False when no slot is padding (every image keeps ``L`` tokens), as
            known on the host when the set was made; then the mask is all True and the
            functions here skip it (no masking operations).
    """
    index: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    num_tokens: int
    padded: bool = True

    @property
    def key_padding_mask(self) -> Optional[torch.Tensor]:
        """``Bool[B, L]``, True at padding slots (the attention modules' ``key_padding_mask``),
        or None when there is none."""
        return ~self.mask if self.padded else None

    @property
    def max_len(self) -> int:
        """``L``, the padded length."""
        return self.index.shape[1]


def make_token_set(keep: torch.Tensor, pad_to: Optional[int] = None) -> TokenSet:
    """Build the padded index of the kept tokens of each image.

    Args:
        keep (Tensor): ``Bool[B, N]`` (or 0/1 of any dtype), True where a token is kept.
        pad_to (int, optional): Padded length ``L``. Default: the largest kept count of the
            batch (this reads one number from the device). Giving ``pad_to`` (e.g. ``N``) avoids
            that host sync; it must be >= every kept count (not checked on the device).

    Returns:
        TokenSet: indices, mask and lengths, on ``keep``'s device.
    """
    if keep.dim() != 2:
        raise ValueError(f'keep must be [B, N], got shape {tuple(keep.shape)}')
    keep = keep.bool()
    n = keep.shape[1]
    lengths = keep.sum(1)
    padded = True
    if pad_to is None:
        if keep.numel():
            # one read from the device for both: equal lengths need no padding mask
            min_len, max_len = torch.stack(torch.aminmax(lengths)).tolist()
            padded = min_len != max_len
        else:
            max_len, padded = 0, False
    else:
        if not 0 <= pad_to <= n:
            raise ValueError(f'pad_to must be in [0, N={n}], got {pad_to}')
        max_len = pad_to
    # kept positions first, each group in original order (stable sort on 0 = kept, 1 = dropped)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    index = order[:, :max_len]
    mask = torch.arange(max_len, device=keep.device) < lengths[:, None]
    return TokenSet(index, mask, lengths, n, padded)


def _expand_index(index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return index.view(*index.shape, *([1] * (x.dim() - 2))).expand(
        *index.shape, *x.shape[2:])


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for every image: ``[B, L, ...]``. Whole rows are read by one
    ``index_select`` over the flattened batch (several times faster than an element-wise
    ``gather`` with the index expanded over the trailing dims); a batch broadcast from one
    image (stride 0) is read from that image, without copying it out."""
    b, l = index.shape
    rest = x.shape[2:]
    if x.dim() == 2:
        return x.gather(1, index)
    if b == 1 or x.stride(0) == 0:
        return x[0].index_select(0, index.reshape(-1)).view(b, l, *rest)
    n = x.shape[1]
    rows = (index + torch.arange(b, device=index.device)[:, None] * n).reshape(-1)
    return x.reshape(b * n, *rest).index_select(0, rows).view(b, l, *rest)


def gather_tokens(x: torch.Tensor, token_set: TokenSet) -> torch.Tensor:
    """Gather the kept tokens of each image into a padded batch.

    Args:
        x (Tensor): ``[B, N, ...]`` tokens (any trailing dims).
        token_set (TokenSet): From :func:`make_token_set`.

    Returns:
        Tensor: ``[B, L, ...]``, padding slots zero. Differentiable w.r.t. ``x``.
    """
    b, l = token_set.index.shape
    if x.dim() < 2 or x.shape[0] != b or x.shape[1] != token_set.num_tokens:
        raise ValueError(f'x must be [B={b}, N={token_set.num_tokens}, ...], '
                         f'got {tuple(x.shape)}')
    out = gather_rows(x, token_set.index)
    if not token_set.padded:
        return out
    valid = token_set.mask.view(b, l, *([1] * (x.dim() - 2)))
    return out.masked_fill(~valid, 0)


def scatter_tokens(values: torch.Tensor, token_set: TokenSet, base: torch.Tensor,
                   mode: str = 'replace') -> torch.Tensor:
    """Write padded per-image results back to their original positions.

    Args:
        values (Tensor): ``[B, L, ...]`` results for the kept tokens (padding slots ignored).
        token_set (TokenSet): From :func:`make_token_set`.
        base (Tensor): ``[B, N, ...]``, supplies every non-kept position.
        mode (str): ``'replace'``: kept positions take ``values``; ``'add'``: kept positions
            take ``base + values``.

    Returns:
        Tensor: ``[B, N, ...]`` new tensor. Differentiable w.r.t. ``values`` and ``base`` (the
        gradient of ``base`` is zero at replaced positions).
    """
    if mode not in ('replace', 'add'):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
    b, l = token_set.index.shape
    if base.dim() < 2 or base.shape[0] != b or base.shape[1] != token_set.num_tokens:
        raise ValueError(f'base must be [B={b}, N={token_set.num_tokens}, ...], '
                         f'got {tuple(base.shape)}')
    if values.shape != (b, l) + base.shape[2:]:
        raise ValueError(f'values must be {(b, l) + tuple(base.shape[2:])}, '
                         f'got {tuple(values.shape)}')
    index = _expand_index(token_set.index, base)
    values = values.to(base.dtype)
    if not token_set.padded:
        if mode == 'add':
            return base.scatter_add(1, index, values)
        return base.scatter(1, index, values)
    valid = token_set.mask.view(b, l, *([1] * (base.dim() - 2)))
    if mode == 'add':
        return base.scatter_add(1, index, values.masked_fill(~valid, 0))
    # padding slots point at distinct non-kept positions: write base back onto them
    src = torch.where(valid, values, base.gather(1, index))
    return base.scatter(1, index, src)


def select_tokens(x: torch.Tensor, keep: torch.Tensor, pad_to: Optional[int] = None):
    """:func:`make_token_set` then :func:`gather_tokens`.

    Returns:
        tuple[Tensor, TokenSet]: ``[B, L, ...]`` padded kept tokens and their token set.
    """
    token_set = make_token_set(keep, pad_to)
    return gather_tokens(x, token_set), token_set


def padded_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     key_mask: Optional[torch.Tensor] = None,
                     query_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                     scale: Optional[float] = None, attn_bias: Optional[torch.Tensor] = None,
                     key_weights: Optional[torch.Tensor] = None, explicit: bool = False,
                     return_logits: bool = False):
    """Scaled dot-product attention over padded sets: the one masked attention of the library.

    Queries come from one padded set, keys/values from the same or another one (e.g. all tokens,
    or spatially reduced tokens). Masked keys get no weight; a query whose image has no valid
    key, and a masked (padding) query, gives zeros, never NaN (also in the backward pass).

    Args:
        query (Tensor): ``[B, Lq, D]`` or ``[B, heads, Lq, D]``.
        key (Tensor): ``[B, Lk, D]`` or ``[B, heads, Lk, D]``.
        value (Tensor): ``[B, Lk, Dv]`` or ``[B, heads, Lk, Dv]``.
        key_mask (Tensor, optional): ``Bool[B, Lk]``, True for real keys. None: all real (or,
            with ``key_weights``, the keys whose weight is above 0.5).
        query_mask (Tensor, optional): ``Bool[B, Lq]``, True for real queries; outputs of the
            others are zeroed. None: all real.
        dropout_p (float): Attention dropout (pass 0 in eval).
        scale (float, optional): Softmax scale, default ``D ** -0.5``.
        attn_bias (Tensor, optional): Additive float bias broadcastable to
            ``[B, (heads,) Lq, Lk]``, added to the scaled logits.
        key_weights (Tensor, optional): ``[B, Lk]`` multiplicative key weights ``m`` (e.g. 0/1
            decisions carrying a straight-through gradient, MSViT Eq. 10):
            ``A_ij = m_j exp(l_ij) / sum_p m_p exp(l_ip)``. A key outside ``key_mask`` takes
            part with the row's largest valid logit in place of its own (its weight is 0 in
            the forward; this keeps the gradient w.r.t. ``m_j`` finite). Explicit path.
        explicit (bool): Explicit ``softmax(q k^T) v`` matrix products instead of
            :func:`torch.nn.functional.scaled_dot_product_attention` (numerically the same;
            visible to FLOP counters).
        return_logits (bool): Also return the scaled logits ``[B, (heads,) Lq, Lk]`` (bias
            included, mask not applied); explicit path.

    Returns:
        Tensor: ``[B, (heads,) Lq, Dv]`` (and the logits if asked).
    """
    _check_attention_shapes(query, key, value, key_mask, query_mask, key_weights)
    b, lq, lk = query.shape[0], query.shape[-2], key.shape[-2]
    heads = (1, ) * (query.dim() - 3)  # broadcast over the heads dim when there is one
    has_key, safe = _safe_key_mask(key_mask, key_weights, heads, lk)
    explicit = explicit or return_logits or key_weights is not None
    if lk == 0 or lq == 0:
        # nothing to attend to / nothing asked: zeros, still attached to the graph
        out = query.new_zeros(query.shape[:-1] + value.shape[-1:]) + 0 * (
            query.sum() + key.sum() + value.sum())
        logits = query.new_zeros(query.shape[:-1] + (lk, )) if return_logits else None
    elif explicit:
        weights = None if key_weights is None else key_weights.view(b, *heads, 1, lk)
        out, logits = _explicit_attention(query, key, value, safe, attn_bias, weights,
                                          dropout_p, scale)
    else:
        out, logits = F.scaled_dot_product_attention(
            query, key, value, attn_mask=_sdpa_mask(safe, attn_bias, query.dtype),
            dropout_p=dropout_p, scale=scale), None
    valid = _valid_outputs(has_key, query_mask, heads)
    if valid is not None and lq and lk:
        out = torch.where(valid, out, out.new_zeros(()))
    return (out, logits) if return_logits else out


def _check_attention_shapes(query, key, value, key_mask, query_mask, key_weights) -> None:
    """Shape checks of :func:`padded_attention`'s arguments (one-line ``ValueError``)."""
    if query.dim() not in (3, 4) or key.dim() != query.dim() or value.dim() != query.dim():
        raise ValueError(f'query/key/value must all be 3-D or 4-D, got {tuple(query.shape)}, '
                         f'{tuple(key.shape)}, {tuple(value.shape)}')
    b, lq, lk = query.shape[0], query.shape[-2], key.shape[-2]
    if key.shape[:-1] != value.shape[:-1] or key.shape[:-2] != query.shape[:-2]:
        raise ValueError(f'incompatible query/key/value shapes {tuple(query.shape)}, '
                         f'{tuple(key.shape)}, {tuple(value.shape)}')
    for name, m, n in (('key_mask', key_mask, lk), ('query_mask', query_mask, lq),
                       ('key_weights', key_weights, lk)):
        if m is not None and m.shape != (b, n):
            raise ValueError(f'{name} must be [B={b}, {n}], got {tuple(m.shape)}')


def _safe_key_mask(key_mask: Optional[torch.Tensor], key_weights: Optional[torch.Tensor],
                   heads: tuple, lk: int) -> tuple:
    """``(has_key, safe)`` of :func:`padded_attention`: ``Bool[B]`` whether an image has a
    valid key, and the key mask ``Bool[B, (1,) 1, Lk]`` to attend with (None, None: no mask);
    ``key_mask`` defaults to the keys whose ``key_weights`` are above 0.5."""
    if key_mask is None and key_weights is not None:
        key_mask = key_weights.detach() > 0.5
    if key_mask is None:
        return None, None
    key_mask = key_mask.bool()
    has_key = key_mask.any(1)
    # rows with no valid key would give NaN: let them attend everywhere, zero them after
    safe = (key_mask | ~has_key[:, None]).view(key_mask.shape[0], *heads, 1, lk)
    return has_key, safe


def _valid_outputs(has_key: Optional[torch.Tensor], query_mask: Optional[torch.Tensor],
                   heads: tuple) -> Optional[torch.Tensor]:
    """``Bool[B, (1,) Lq | 1, 1]``: the outputs :func:`padded_attention` keeps (a query with
    a valid key in its image and not a padding query); None when all are kept."""
    valid = None if has_key is None else has_key.view(has_key.shape[0], *heads, 1, 1)
    if query_mask is not None:
        q_valid = query_mask.bool().view(query_mask.shape[0], *heads, query_mask.shape[1], 1)
        valid = q_valid if valid is None else valid & q_valid
    return valid


def _sdpa_mask(safe: Optional[torch.Tensor], attn_bias: Optional[torch.Tensor], dtype):
    """SDPA's ``attn_mask``: the boolean mask, or the bias with ``-inf`` at masked keys."""
    if attn_bias is None:
        return safe
    bias = attn_bias.to(dtype)
    if safe is None:
        return bias
    neg = torch.zeros(safe.shape, dtype=dtype, device=bias.device)
    return bias + neg.masked_fill(~safe, float('-inf'))


def _explicit_attention(query, key, value, safe, attn_bias, weights, dropout_p, scale):
    """Explicit attention of :func:`padded_attention`; returns ``(out, logits)``."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    logits = (query * scale) @ key.transpose(-2, -1)
    if attn_bias is not None:
        logits = logits + attn_bias
    if weights is None:
        attn = logits if safe is None else logits.masked_fill(~safe, float('-inf'))
        attn = attn.softmax(dim=-1)
    else:
        # m_j exp(l_j - shift) / sum_p m_p exp(l_p - shift), shift = the largest valid logit;
        # invalid keys stand at the shift (exp 0 = 1) so that exp never overflows
        active = weights.detach() > 0.5 if safe is None else safe
        shift = logits.detach().masked_fill(~active, float('-inf')).amax(-1, keepdim=True)
        e = torch.exp((logits - shift).masked_fill(~active, 0.)) * weights.to(logits.dtype)
        attn = e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ value, logits
