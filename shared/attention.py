"""Reference attention, the masks it uses, ``repeat_kv``, and one MHA/GQA/MQA module.

Shapes: ``q`` is ``(batch, heads, q_len, head_dim)``; ``k``/``v`` are ``(batch, kv_heads, kv_len, head_dim)``
with ``heads`` a multiple of ``kv_heads`` (MHA: equal; GQA: a divisor; MQA: ``kv_heads == 1``).

Masks follow PyTorch: a **bool** mask is ``True`` where a query may attend to a key; a **float** mask is
added to the scores (``0`` to attend, a very negative number or ``-inf`` to block; ALiBi-style biases are
float masks too). A mask is ``(q_len, kv_len)`` or 4D, broadcastable to ``(batch, heads, q_len, kv_len)``.

Positions: the builders place query ``i`` at position ``offset + i`` and key ``j`` at position ``j``. With a
KV cache holding ``offset`` earlier tokens, ``kv_len = offset + q_len`` and the queries are the last ``q_len``
tokens (the default). Note that ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``
aligns the causal triangle to the top-left instead (``offset = 0``), which is wrong for a KV cache when
``q_len != kv_len``.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
from torch import nn

from shared.rope import apply_rope
from shared.utils import (
    InputTypeError,
    check_bool,
    check_int,
    check_module_input,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "scaled_dot_product_attention",
    "check_qkv",
    "repeat_kv",
    "causal_mask",
    "sliding_window_mask",
    "block_diagonal_mask",
    "with_padding",
    "bool_to_additive",
    "additive_to_bool",
    "Attention",
]


def _check_mask(mask: torch.Tensor, target: tuple[int, int, int, int]) -> None:
    """Raise unless ``mask`` is bool/float, 2D or 4D, and broadcasts to ``target`` (batch, heads, q, kv)."""
    check_tensor("mask", mask, ndim=(2, 4))
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise InputTypeError(
            f"mask must be bool (True = attend) or floating point (added to the scores), got {mask.dtype}; "
            "turn a 0/1 padding mask into bool with `.bool()` and combine it with `with_padding`"
        )
    shape = (1, 1, *mask.shape) if mask.ndim == 2 else tuple(mask.shape)
    if any(s not in (1, t) for s, t in zip(shape, target, strict=True)):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to (batch, heads, q_len, kv_len) = {target}"
        )
    if mask.is_floating_point():
        _check_additive(mask)


def _check_additive(mask: torch.Tensor) -> None:
    """An additive mask may hold any finite number or -inf (blocked); NaN and +inf would poison the row."""
    if bool((mask.isnan() | (mask == math.inf)).any()):
        raise ValueError(
            "an additive (float) mask must not hold NaN or +inf; block a key with -inf or finfo.min"
        )


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Refuse attention inputs that do not fit together (``ValueError`` / ``InputTypeError``).

    ``q`` ``(batch, heads, q_len, head_dim)``, ``k`` ``(batch, kv_heads, kv_len, head_dim)`` and ``v``
    ``(batch, kv_heads, kv_len, v_dim)``: finite, non-empty floating point of one dtype, on one device with
    ``others`` (a mask, ``cu_seqlens``), and ``heads`` a multiple of ``kv_heads``. Shared by the reference
    below and the Triton kernel (:func:`shared.kernels.flash_attention.flash_attention`).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=4, dtype_kind="float", nonempty=True, finite=True)
    check_same_device(q=q, k=k, v=v, **others)
    if not q.dtype == k.dtype == v.dtype:
        raise InputTypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, n_heads, _, head_dim = q.shape
    if k.shape[0] != batch or v.shape[0] != batch:
        raise ValueError(f"batch sizes differ: q {batch}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[3] != head_dim:
        raise ValueError(f"k's head_dim {k.shape[3]} must equal q's head_dim {head_dim}")
    if k.shape[1:3] != v.shape[1:3]:
        raise ValueError(
            f"k and v must have the same (kv_heads, kv_len), got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if n_heads % k.shape[1]:
        raise ValueError(f"q's heads ({n_heads}) must be a multiple of k/v's heads ({k.shape[1]})")


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head ``n_rep`` times: ``(batch, kv_heads, seq, d) -> (batch, kv_heads*n_rep, seq, d)``.

    Head ``h`` of the result is head ``h // n_rep`` of ``x`` (query heads ``0..n_rep-1`` share kv head 0),
    i.e. ``torch.repeat_interleave(x, n_rep, dim=1)``, equal to ``transformers``' ``repeat_kv``.
    With ``n_rep == 1`` it returns ``x`` itself.
    """
    check_tensor("x", x, ndim=4)
    check_int("n_rep", n_rep, minimum=1)
    if n_rep == 1:
        return x
    batch, kv_heads, seq, head_dim = x.shape
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, seq, head_dim)  # a view, no copy yet
    return x.reshape(batch, kv_heads * n_rep, seq, head_dim)


@overload
def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = ...,
    *,
    scale: float | None = ...,
    return_weights: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = ...,
    *,
    scale: float | None = ...,
    return_weights: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor]: ...
def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scale + mask) v``, written out step by step.

    Args:
        q: ``(batch, heads, q_len, head_dim)``.
        k: ``(batch, kv_heads, kv_len, head_dim)``; ``heads % kv_heads == 0`` (GQA/MQA repeat k and v).
        v: ``(batch, kv_heads, kv_len, v_dim)``.
        mask: bool (``True`` = attend) or float (added to the scores), ``(q_len, kv_len)`` or 4D
            broadcastable to ``(batch, heads, q_len, kv_len)``. 3D masks are refused: they would
            broadcast ``batch`` onto the heads axis.
        scale: multiplies the scores; default ``1 / sqrt(head_dim)``.
        return_weights: also return the attention weights ``(batch, heads, q_len, kv_len)``.

    Returns ``(batch, heads, q_len, v_dim)`` in ``q``'s dtype (and the weights, also in ``q``'s dtype).

    The order of operations is ``transformers``' ``eager_attention_forward``: scores in ``q``'s dtype, mask
    added, softmax in float32 (float64 for float64 inputs, which ``transformers`` would downcast), cast back,
    times ``v``.

    Refused (``ValueError``): NaN or ±inf in ``q``/``k``/``v`` (a NaN value at a blocked key would still reach
    the output, as 0 * NaN = NaN), NaN or ``+inf`` in a float mask (``-inf`` blocks), empty dimensions, tensors
    on different devices or on ``meta``; a mask that does not broadcast to the scores.

    Fully masked rows (a query that may attend to no key): with a bool mask, or a float mask of ``-inf``,
    the softmax would be ``0/0 = NaN``; here such rows get weights 0 and output 0, as PyTorch's
    ``scaled_dot_product_attention`` does. ``transformers``' eager masks block with ``finfo(dtype).min``
    instead of ``-inf``: a fully blocked row then stays finite and becomes the *uniform* average of all
    values. Both are harmless because such rows (left padding) are never read, but they differ.
    """
    check_qkv(q, k, v, mask=mask)
    check_bool("return_weights", return_weights)
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    else:
        check_number("scale", scale, gt=0)
    if mask is not None:
        _check_mask(mask, (batch, n_heads, q_len, kv_len))

    k = repeat_kv(k, n_heads // n_kv_heads)  # (batch, heads, kv_len, head_dim)
    v = repeat_kv(v, n_heads // n_kv_heads)  # (batch, heads, kv_len, v_dim)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (batch, heads, q_len, kv_len)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    # float32 at least (bf16/fp16 are upcast, as transformers does); float64 stays float64
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    no_key = (scores == float("-inf")).all(dim=-1, keepdim=True)  # rows where every key is blocked
    weights = weights.masked_fill(no_key, 0.0).to(q.dtype)
    out = torch.matmul(weights, v)  # (batch, heads, q_len, v_dim)
    return (out, weights) if return_weights else out


def _positions(q_len: int, kv_len: int | None, offset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute positions of the queries ``(q_len,)`` and keys ``(kv_len,)`` (see the module docstring)."""
    check_int("q_len", q_len, minimum=1)
    if offset is not None:
        check_int("offset", offset)
    if kv_len is None:
        kv_len = q_len + (offset or 0)
        if kv_len < 1:
            raise ValueError(f"q_len + offset must be >= 1 when kv_len is not given, got {kv_len}")
    check_int("kv_len", kv_len, minimum=1)
    if offset is None:
        offset = kv_len - q_len
    return torch.arange(q_len) + offset, torch.arange(kv_len)


def causal_mask(q_len: int, kv_len: int | None = None, *, offset: int | None = None) -> torch.Tensor:
    """Bool ``(q_len, kv_len)``: query ``i`` (at position ``offset + i``) sees keys ``j <= offset + i``.

    Defaults: ``kv_len = q_len + offset``; ``offset = kv_len - q_len`` (queries are the newest tokens:
    a prompt after a KV cache, or one decoding step). Equal to ``transformers``' ``causal_mask_function``
    with ``q_offset - kv_offset = offset``, and to ``torch.nn.attention.bias.causal_lower_right`` by default
    (``offset=0`` gives ``causal_upper_left``, the alignment of SDPA's ``is_causal=True``).
    A negative ``offset`` leaves the first ``-offset`` queries with no key (fully masked rows).
    """
    q_pos, kv_pos = _positions(q_len, kv_len, offset)
    return kv_pos[None, :] <= q_pos[:, None]


def sliding_window_mask(
    q_len: int, kv_len: int | None = None, *, window: int, offset: int | None = None
) -> torch.Tensor:
    """Causal mask limited to the last ``window`` tokens **including the query's own**: bool ``(q_len, kv_len)``.

    Query at position ``p`` sees keys at ``p - window + 1 .. p``, exactly ``transformers``'
    ``sliding_window_causal_mask_function(window)`` (``kv_idx > q_idx - window`` and ``kv_idx <= q_idx``),
    i.e. ``config.sliding_window`` tokens (Mistral's ``sliding_window=4096``). ``window=1`` sees only itself.
    ``kv_len`` and ``offset`` as in :func:`causal_mask`. With ``transformers``' sliding-window cache
    (keys ``kv_offset ..``), pass ``offset = q_offset - kv_offset``.
    """
    check_int("window", window, minimum=1)
    q_pos, kv_pos = _positions(q_len, kv_len, offset)
    return (kv_pos[None, :] <= q_pos[:, None]) & (kv_pos[None, :] > q_pos[:, None] - window)


def block_diagonal_mask(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Bool ``(total, total)`` mask letting each token attend only inside its own segment.

    ``cu_seqlens`` ``(n_segments + 1,)`` are cumulative lengths ``[0, l_0, l_0 + l_1, ..., total]``, the
    format of FlashAttention's varlen kernels and of Qwen2-VL's vision tower (one segment per image,
    or per window in Qwen2.5-VL). Segments are bidirectional; for packed causal LM training combine with
    ``& causal_mask(total)``. Equal to attending over each segment separately (what ``transformers``'
    Qwen2-VL ``VisionAttention`` does without FlashAttention).
    """
    check_tensor("cu_seqlens", cu_seqlens, ndim=1, dtype_kind="int")
    if cu_seqlens.numel() < 2 or int(cu_seqlens[0]) != 0:
        raise ValueError(f"cu_seqlens must start with 0 and have >= 2 entries, got {cu_seqlens.tolist()}")
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]  # (n_segments,)
    if (lengths < 0).any():
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu_seqlens.tolist()}")
    if int(cu_seqlens[-1]) < 1:
        raise ValueError("cu_seqlens describe no tokens (total length 0)")
    segment_ids = torch.arange(lengths.numel(), device=lengths.device)  # (n_segments,)
    segment = torch.repeat_interleave(segment_ids, lengths)  # (total,): the segment of each token
    return segment[:, None] == segment[None, :]


def with_padding(mask: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """Combine a bool structure mask with a padding mask: bool ``(batch, 1, q_len, kv_len)``.

    ``mask``: bool ``(q_len, kv_len)`` or ``(batch or 1, 1, q_len, kv_len)`` (causal, sliding, block ...).
    ``padding_mask``: ``(batch, kv_len)``, bool or 0/1 integers (a tokenizer's ``attention_mask``); 1 marks a
    real token. Padded keys are blocked for every query. Padded *queries* keep their rows; with left padding
    and a causal mask their rows may be fully masked (see :func:`scaled_dot_product_attention`).
    """
    check_tensor("mask", mask, ndim=(2, 4), dtype_kind="bool")
    check_tensor("padding_mask", padding_mask, ndim=2, nonempty=True)
    if padding_mask.dtype != torch.bool:
        if padding_mask.is_floating_point() or padding_mask.is_complex():
            raise InputTypeError(f"padding_mask must be bool or 0/1 integers, got {padding_mask.dtype}")
        if ((padding_mask != 0) & (padding_mask != 1)).any():
            raise ValueError("padding_mask integers must be 0 (padding) or 1 (token)")
        padding_mask = padding_mask.bool()
    batch, kv_len = padding_mask.shape
    if mask.ndim == 2:
        mask = mask[None, None]  # (1, 1, q_len, kv_len)
    if mask.shape[1] != 1 or mask.shape[0] not in (1, batch) or mask.shape[3] != kv_len:
        raise ValueError(
            f"mask must be (q_len, {kv_len}) or ({batch} or 1, 1, q_len, {kv_len}) to match padding_mask "
            f"{tuple(padding_mask.shape)}, got {tuple(mask.shape)}"
        )
    return mask & padding_mask[:, None, None, :].to(mask.device)


def bool_to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool mask (``True`` = attend) to an additive one: ``0`` where ``True``, ``finfo(dtype).min`` elsewhere.

    Same shape; equal to ``transformers``' ``eager_mask``. The most negative *finite* number is used rather
    than ``-inf`` so that a fully masked row gives no NaN (it becomes a uniform average instead).
    """
    check_tensor("mask", mask, dtype_kind="bool")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputTypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device), blocked)


def additive_to_bool(mask: torch.Tensor) -> torch.Tensor:
    """Additive float mask to bool: ``True`` (attend) where the value is above ``finfo(dtype).min``.

    ``-inf`` and ``finfo.min`` count as blocked; every other value (``0``, or a finite bias such as
    ALiBi's) counts as attend, so the biases themselves are lost. NaN and ``+inf`` are refused
    (``ValueError``), as :func:`scaled_dot_product_attention` refuses them. Inverse of :func:`bool_to_additive`.
    """
    check_tensor("mask", mask, dtype_kind="float")
    _check_additive(mask)
    return mask > torch.finfo(mask.dtype).min


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections: MHA, GQA or MQA.

    ``n_kv_heads`` defaults to ``n_heads`` (MHA); ``1 < n_kv_heads < n_heads`` is GQA; ``1`` is MQA.
    ``head_dim`` defaults to ``hidden // n_heads``. ``qkv_bias`` adds biases to q/k/v (Qwen2),
    ``out_bias`` to the output projection (Llama's ``attention_bias=True`` sets both).
    Parameter names match ``transformers``' ``LlamaAttention``, so its ``state_dict`` loads as is.
    """

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        qkv_bias: bool = False,
        out_bias: bool = False,
    ) -> None:
        super().__init__()
        check_int("hidden", hidden, minimum=1)
        check_int("n_heads", n_heads, minimum=1)
        check_bool("qkv_bias", qkv_bias)
        check_bool("out_bias", out_bias)
        n_kv_heads = n_heads if n_kv_heads is None else check_int("n_kv_heads", n_kv_heads, minimum=1)
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None:
            if hidden % n_heads:
                raise ValueError(
                    f"hidden ({hidden}) must be divisible by n_heads ({n_heads}), or pass head_dim"
                )
            head_dim = hidden // n_heads
        check_int("head_dim", head_dim, minimum=1)
        self.hidden, self.n_heads, self.n_kv_heads, self.head_dim = hidden, n_heads, n_kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, hidden, bias=out_bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(batch, seq, hidden)`` -> ``(batch, seq, hidden)`` (and weights ``(batch, heads, seq, seq)``).

        ``mask`` as in :func:`scaled_dot_product_attention` (``None`` = every token sees every token; pass
        :func:`causal_mask` for a decoder). ``cos``/``sin`` (RoPE, rotate-half layout) are ``(seq, head_dim)``
        or ``(batch, seq, head_dim)`` as ``LlamaRotaryEmbedding`` returns; they rotate q and k.
        """
        check_tensor("x", x, ndim=3, dtype_kind="float", nonempty=True, finite=True)
        if x.shape[-1] != self.hidden:
            raise ValueError(f"x's last dim {x.shape[-1]} must equal hidden={self.hidden}")
        check_module_input(self, x)
        check_bool("return_weights", return_weights)
        if (cos is None) != (sin is None):
            raise ValueError("pass both cos and sin, or neither")
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)  # (b, h, s, d)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, kv, s, d)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, kv, s, d)
        if cos is not None and sin is not None:
            check_tensor("cos", cos, ndim=(2, 3))
            check_tensor("sin", sin, ndim=(2, 3))
            if cos.ndim == 3:  # (batch, seq, d) -> (batch, 1, seq, d), shared by all heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out, weights = scaled_dot_product_attention(q, k, v, mask, scale=self.scale, return_weights=True)
        out = self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim))
        return (out, weights) if return_weights else out
