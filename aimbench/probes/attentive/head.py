"""AIM's attentive probe: attention pooling with one learned query, then a linear classifier.

As in Apple's released heads: tokens (B, N, D) go through ``BatchNorm1d(D, affine=False,
eps=1e-6)`` over the token axis (running statistics at eval), one learned query ``cls_token``
(1, 1, D) that is NOT projected attends over ``k = Linear(D, D, bias=False)(x)`` and ``v =
Linear(D, D, bias=False)(x)`` with ``heads`` heads (scale head_dim^-0.5, no output projection),
the query outputs are averaged, and ``linear`` maps D to the classes. Parameter names are those
of Apple's ``head.*`` keys, so released heads load strictly; ``linear`` has a bias only when the
file has one (the first release did, later code does not).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from aimbench.adapters.weights import load_strict
from aimbench.errors import UserError

HEAD_PREFIX = "head."


class AttentivePoolingHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, heads: int, linear_bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.linear = nn.Linear(dim, num_classes, bias=linear_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        x = self.bn(tokens.transpose(1, 2)).transpose(1, 2)
        h = self.heads
        q = self.cls_token.expand(b, -1, -1).reshape(b, -1, h, d // h).transpose(1, 2)
        k = self.k(x).reshape(b, n, h, d // h).transpose(1, 2)
        v = self.v(x).reshape(b, n, h, d // h).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d)
        return self.linear(pooled.mean(dim=1))


def head_from_state_dict(state: Mapping[str, torch.Tensor], heads: int, source: str) -> AttentivePoolingHead:
    """Build a head shaped by a released file's ``head.*`` tensors and load it strictly."""
    own = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    if "linear.weight" not in own or "k.weight" not in own:
        raise UserError(f"'{source}' is not an attentive-probe head file: no head.linear.weight / head.k.weight")
    if len(own) != len(state):
        extra = sorted(k for k in state if not k.startswith(HEAD_PREFIX))
        raise UserError(f"'{source}' holds more than a head: {', '.join(extra[:3])}")
    num_classes, dim = own["linear.weight"].shape
    head = AttentivePoolingHead(dim, num_classes, heads, linear_bias="linear.bias" in own)
    load_strict(head, own, source)
    return head.eval()
