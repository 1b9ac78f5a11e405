"""Many attentive probe heads evaluated as one batched computation.

``AttentiveGrid`` holds one AIM attentive head (:class:`~aimbench.probes.attentive.head.AttentivePoolingHead`)
per layer set, for one (lr, wd) grid point, as stacked tensors, so a training step runs every
head of the grid with a few einsums instead of a Python loop over modules. Each head is
initialised exactly as a standalone ``AttentivePoolingHead`` built under its own seed, and
:meth:`AttentiveGrid.head` exports any of them back as one (with Apple's ``head.*`` layout), so a
head trained in the grid is the same object as a head trained alone.

The BatchNorm (no affine) of a layer set is shared by every grid point: they all read the same
tokens, so their normalisation and running statistics are identical anyway. Because the query is a
single learned vector, the key projection is applied to the query and the value projection after
pooling (:meth:`AttentiveGrid.forward`): the same function as Apple's head, at a cost per head
linear, not quadratic, in the width, so the grid's heads cost little next to the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aimbench.probes.attentive.head import AttentivePoolingHead


def standalone_head(seed: int, dim: int, classes: int, heads: int) -> AttentivePoolingHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AttentivePoolingHead(dim, classes, heads, linear_bias=True)


class SetNorms(nn.Module):
    """One ``BatchNorm1d(D, affine=False, eps=1e-6)`` per layer set, over every token."""

    def __init__(self, sets: int, dim: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim, affine=False, eps=1e-6) for _ in range(sets))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(L, B, N, D) -> (L, B, N, D)."""
        return torch.stack([norm(x.transpose(1, 2)).transpose(1, 2) for norm, x in zip(self.norms, tokens)])

    def track_(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """Fold a training batch's (L, D) mean and biased variance of ``count`` values per channel
        into each set's running statistics, by ``BatchNorm1d``'s rule: the momentum's share of the
        batch's, the variance unbiased (the batch normalised itself with ``batch_stats``)."""
        for index, (mu, sigma2) in enumerate(zip(mean, var)):
            norm = self.norm(index)
            assert norm.running_mean is not None and norm.running_var is not None and norm.num_batches_tracked is not None
            momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked + 1)
            unbiased = sigma2 * count / max(count - 1, 1)
            norm.running_mean.copy_((1 - momentum) * norm.running_mean.double() + momentum * mu)
            norm.running_var.copy_((1 - momentum) * norm.running_var.double() + momentum * unbiased)
            norm.num_batches_tracked.add_(1)

    def norm(self, index: int) -> nn.BatchNorm1d:
        """The BatchNorm of layer set ``index``."""
        norm = self.norms[index]
        assert isinstance(norm, nn.BatchNorm1d)  # every entry is one, by construction
        return norm


class AttentiveGrid(nn.Module):
    """The heads of all layer sets at one grid point: parameters stacked along a leading L axis."""

    def __init__(self, seeds: Sequence[int], dim: int, classes: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        built = [standalone_head(seed, dim, classes, heads) for seed in seeds]  # each checks that heads divide dim
        self.cls_token = nn.Parameter(torch.stack([h.cls_token.detach().reshape(dim) for h in built]))
        self.k = nn.Parameter(torch.stack([h.k.weight.detach() for h in built]))
        self.v = nn.Parameter(torch.stack([h.v.weight.detach() for h in built]))
        self.weight = nn.Parameter(torch.stack([h.linear.weight.detach() for h in built]))
        self.bias = nn.Parameter(torch.stack([h.linear.bias.detach() for h in built]))

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (L, B, N, D) of each head's own layer set -> logits (L, B, C).

        The query is one learned vector, so the key projection can move onto it and the value
        projection after the pooling: per attention head h, ``q_h . (W_k,h x_n) = (W_k,h^T q_h) . x_n``
        and ``sum_n a_hn W_v,h x_n = W_v,h (sum_n a_hn x_n)``. Same function, but O(N D) per head
        and image instead of O(N D^2): a grid of heads costs little next to the backbone."""
        sets, batch, tokens, dim = normed.shape
        h, d = self.heads, dim // self.heads
        query_in_token_space = torch.einsum("lhd,lhde->lhe", self.cls_token.reshape(sets, h, d), self.k.reshape(sets, h, d, dim))
        attention = (torch.einsum("lbne,lhe->lbhn", normed, query_in_token_space) * d**-0.5).softmax(dim=-1)
        mixed = torch.einsum("lbhn,lbne->lbhe", attention, normed)  # attention-weighted tokens, per head
        pooled = torch.einsum("lbhe,lhde->lbhd", mixed, self.v.reshape(sets, h, d, dim)).reshape(sets, batch, dim)
        return torch.einsum("lbd,lcd->lbc", pooled, self.weight) + self.bias[:, None]

    def by_name(self) -> dict[str, list[nn.Parameter]]:
        """The stacked parameters under Apple's head names (the names a protocol's ``no_weight_decay`` uses)."""
        return {"cls_token": [self.cls_token], "k.weight": [self.k], "v.weight": [self.v],
                "linear.weight": [self.weight], "linear.bias": [self.bias]}  # fmt: skip

    def head(self, index: int, norm: nn.BatchNorm1d) -> AttentivePoolingHead:
        """Head ``index`` as a standalone module (with its set's BatchNorm statistics)."""
        dim, classes = self.k.shape[-1], self.weight.shape[1]
        if norm.running_mean is None or norm.running_var is None or norm.num_batches_tracked is None:
            raise ValueError("a head needs its set's BatchNorm running statistics (track_running_stats=True)")
        head = AttentivePoolingHead(dim, classes, self.heads, linear_bias=True)
        state = {
            "bn.running_mean": norm.running_mean, "bn.running_var": norm.running_var,
            "bn.num_batches_tracked": norm.num_batches_tracked, "cls_token": self.cls_token[index].reshape(1, 1, dim),
            "k.weight": self.k[index], "v.weight": self.v[index],
            "linear.weight": self.weight[index], "linear.bias": self.bias[index],
        }  # fmt: skip
        head.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        return head.eval()
