"""The attentive probe's BatchNorm over a training batch, computed where the batch's rows are.

The heads' BatchNorm (no affine) normalises each layer set's tokens with the mean and variance of
the whole global batch. Computing them with ``BatchNorm1d`` needs the whole batch of a set in one
tensor on its owner, and then the owner holds every row of its sets' tokens at once: for AIM-7B
at a batch of 1,024 that is 4.3 GB a layer set, more than its heads' optimizer state. Instead:

* every rank computes the moments of fixed chunks of its rows (``--batch-size`` images, the
  chunks the backbone forwards: the same chunks at any world size), per layer set and channel;
* the chunks' (count, mean, M2) are gathered from every rank and merged in the batch's order
  (Chan et al.'s pairwise update, in float64), so every rank gets the same mean and variance, the
  same at any world size, bit for bit;
* each rank normalises its own rows in place, and the heads' owners receive normalised tokens one
  micro-batch at a time (``sharding.to_owners`` over a window of rows).

The running statistics follow ``BatchNorm1d``'s rule (momentum, unbiased variance), so an exported
head is an ordinary ``AttentivePoolingHead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from aimbench.probes.ownership import Shard
from aimbench.probes.sharding import all_rows

EPS = 1e-6  # Apple's head: BatchNorm1d(D, affine=False, eps=1e-6)


def chunk_moments(tokens: torch.Tensor | Sequence[torch.Tensor], chunk: int) -> torch.Tensor:
    """Each layer set's tokens (R, N, D) -> (K, 3, L, D) float64: per chunk of ``chunk`` rows (K of
    them), each set's count, mean and M2 (sum of squared deviations) per channel over the chunk's
    rows and tokens."""
    rows, tokens_per_row, dim = tokens[0].shape
    out = torch.empty(-(-rows // chunk), 3, len(tokens), dim, dtype=torch.float64, device=tokens[0].device)
    for k, start in enumerate(range(0, rows, chunk)):
        for s, set_tokens in enumerate(tokens):
            values = set_tokens[start : start + chunk]
            var, mean = torch.var_mean(values.reshape(-1, dim), dim=0, correction=0)
            count = values.shape[0] * tokens_per_row
            out[k, 0, s], out[k, 1, s], out[k, 2, s] = count, mean.double(), var.double() * count
    return out


def merged(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(K, 3, L, D) chunk moments -> each set's (mean, biased variance) per channel, (L, D) float64,
    and the count, merging the chunks one after the other in order (Chan et al. 1979)."""
    count, mean, m2 = moments[0, 0].clone(), moments[0, 1].clone(), moments[0, 2].clone()
    for k in range(1, moments.shape[0]):
        n, mu, sq = moments[k]
        total = count + n
        delta = mu - mean
        mean = mean + delta * n / total
        m2 = m2 + sq + delta * delta * count * n / total
        count = total
    return mean, m2 / count, int(count[0, 0]) if count.numel() else 0


def batch_moments(local: torch.Tensor | Sequence[torch.Tensor], shard: Shard, rows: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Each layer set's mean and biased variance (L, D) over every row of a batch of ``rows``, of
    which ``local`` (L tensors (R, N, D), or one (L, R, N, D)) holds this rank's (``shard.rows(rows)``; alone: all), and the
    count of values per channel; the same on every rank and at every world size."""
    mine = chunk_moments(local, shard.chunk)
    everyone = all_rows(mine, replace(shard, chunk=1), -(-rows // shard.chunk))  # chunk k of the batch at row k
    return merged(everyone)


def normalise_(tokens: torch.Tensor | Sequence[torch.Tensor], mean: torch.Tensor, var: torch.Tensor) -> None:
    """Each set's tokens (R, N, D) normalised in place by its row of the (L, D) mean and variance."""
    for x, mu, sigma2 in zip(tokens, mean, var):
        x.sub_(mu.to(x.dtype)).mul_(torch.rsqrt(sigma2 + EPS).to(x.dtype))
