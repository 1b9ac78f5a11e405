"""The still-training heads of a linear probe's grid, and one training step over all of them.

A head is (column, grid point): a column is what it reads (one source, or two concatenated: a
layer set's token kind), a grid point its (lr, wd). Columns that read as many sources and still
train the same grid points form a block (the full grid is one block of single-source columns,
plus one of concatenated ones), whose weights sit side by side in one (columns, points, K·D, C)
tensor, so a single batched product serves every head of the block. Each head's weight and bias
are views into that tensor, so AdamW (fused, one parameter group per grid point and decay) updates
them in place.

Forward and backward are written out (the gradient of a head's batch-mean cross-entropy is its
softmax minus the one-hot, over the batch) rather than left to autograd, so every product writes
into buffers allocated once: at ImageNet shape the grid holds gigabytes of weights, and a fresh
gradient, stacked copy or cast of them at every step cost more than the products themselves (the
products and gradients alone of 8 sources x 18 grid points, 256 images, width 1536, 1000 classes,
on the 2 CPU cores this was written on: 2.65 s through autograd on stacked weights, 1.47 s written
out, 0.45 s with bf16 products). AdamW's moments live in the blocks too, made before its first
step, because 6-MB tensors allocated one by one took 20 s to first touch there. Under
``head_precision = "bf16"`` the products take bf16 copies of the weights and inputs and the
gradients come back in bf16, as autocast would give them; weights, AdamW state, softmax and every
score stay fp32.

Heads are independent: zero init, the same batches, per-head gradient clipping, so a head trains
exactly as it would alone, whatever else is in its block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aimbench.probes.config import LinearProbeConfig, grid_points
from aimbench.probes.schedule import grid_optimizer, warmup_cosine_schedule


@dataclass
class _Block:
    """Columns reading the same number of sources and training the same grid points."""

    columns: list[int]
    reads: torch.Tensor  # (columns, K) source indices
    points: list[int]  # grid points still training, ascending
    weight: torch.Tensor  # (columns, points, K*D, C), fp32
    bias: torch.Tensor  # (columns, points, C)
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor
    moments: tuple[torch.Tensor, ...]  # AdamW's exp_avg and exp_avg_sq of weight, then of bias

    @classmethod
    def zeros(cls, columns: list[int], reads: list[tuple[int, ...]], points: list[int], dim: int, classes: int,
              device: torch.device) -> _Block:  # fmt: skip
        shape = (len(columns), len(points), len(reads[0]) * dim, classes)
        weight, bias = torch.zeros(shape, device=device), torch.zeros(shape[:2] + (classes,), device=device)
        index = torch.tensor(reads, dtype=torch.long, device=device)
        moments = tuple(torch.zeros_like(t) for t in (weight, weight, bias, bias))
        return cls(columns, index, points, weight, bias, torch.zeros_like(weight), torch.zeros_like(bias), moments)

    def heads(self) -> list[tuple[int, int]]:
        """(column, grid point) of every head, in logits order: column-major."""
        return [(j, g) for j in self.columns for g in self.points]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) features -> (columns, B, K*D): what each column reads, concatenated."""
        columns, reads = self.reads.shape
        return x.index_select(1, self.reads.flatten()).view(len(x), columns, reads * x.shape[2]).transpose(0, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (columns, points, B, C) in fp32, from the fp32 weights (scoring)."""
        return torch.matmul(self.inputs(x).unsqueeze(1), self.weight) + self.bias.unsqueeze(2)


class LinearHeads:
    """Every still-training head, its optimizer and schedule; :meth:`keep` drops stopped heads."""

    def __init__(self, config: LinearProbeConfig, reads: Sequence[tuple[int, ...]], active: Mapping[int, Sequence[int]],
                 shape: tuple[int, int], batches: int, device: torch.device) -> None:  # fmt: skip
        """``reads[j]``: the sources column j reads; ``active``: column -> its grid points still training."""
        self.config, self.reads, self.shape, self.batches, self.device = config, list(reads), shape, batches, device
        self.dtype = torch.bfloat16 if config.head_precision == "bf16" else torch.float32
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for j in sorted(active):
            if active[j]:
                groups.setdefault((len(self.reads[j]), tuple(sorted(active[j]))), []).append(j)
        self.blocks = [_Block.zeros(cols, [self.reads[j] for j in cols], list(points), *shape, device)
                       for (_, points), cols in groups.items()]  # fmt: skip
        self.params: dict[tuple[int, int], tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        self._moments: dict[torch.nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}  # views into the blocks' moments
        moments = self._moments
        for block in self.blocks:
            for c, j in enumerate(block.columns):
                for p, g in enumerate(block.points):
                    weight, bias = torch.nn.Parameter(block.weight[c, p]), torch.nn.Parameter(block.bias[c, p])
                    weight.grad, bias.grad = block.weight_grad[c, p], block.bias_grad[c, p]
                    self.params[(j, g)] = (weight, bias)
                    moments[weight] = block.moments[0][c, p], block.moments[1][c, p]
                    moments[bias] = block.moments[2][c, p], block.moments[3][c, p]
        points = range(len(grid_points(config)))
        named = [{"weight": [w for (_, g), (w, _) in self.params.items() if g == point],
                  "bias": [b for (_, g), (_, b) in self.params.items() if g == point]} for point in points]  # fmt: skip
        self.optimizer = grid_optimizer(config, named, fused=device.type in ("cpu", "cuda"))
        for param, (exp_avg, exp_avg_sq) in moments.items():  # AdamW finds its state made, in the blocks' tensors
            step = torch.zeros((), dtype=torch.float32, device=device if self.optimizer.defaults["fused"] else "cpu")
            self.optimizer.state[param] = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        self.schedule = warmup_cosine_schedule(self.optimizer, config.epochs, batches, config.warmup_fraction)
        self._buffers: dict[str, torch.Tensor] = {}

    def order(self) -> list[tuple[int, int]]:
        """(column, grid point) of every still-training head, in the order scores are returned."""
        return [head for block in self.blocks for head in block.heads()]

    def active(self) -> dict[int, list[int]]:
        return {j: [g for jj, g in self.params if jj == j] for j in dict.fromkeys(j for j, _ in self.params)}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step of every head on standardised features ``x`` (B, S, D) and labels ``y``."""
        rows, batch = torch.arange(len(y), device=x.device), len(y)
        for block in self.blocks:
            columns, points, width, classes = block.weight.shape
            inputs = block.inputs(x).to(self.dtype)  # (columns, B, K*D)
            weight, bias, grad = block.weight, block.bias, block.weight_grad
            logits = self._scratch("logits", (columns, points, batch, classes), torch.float32)
            products = logits
            if self.dtype != torch.float32:  # bf16 copies of the weights in, bf16 gradients out
                weight = self._scratch("weight", weight.shape, self.dtype).copy_(weight)
                bias, grad = bias.to(self.dtype), self._scratch("grad", grad.shape, self.dtype)
                products = self._scratch("products", logits.shape, self.dtype)
            repeated = self._scratch("inputs", (points, batch, width), self.dtype)  # one column's inputs, once per grid point
            for c in range(columns):
                torch.baddbmm(bias[c].unsqueeze(1), repeated.copy_(inputs[c].expand_as(repeated)), weight[c], out=products[c])
                if products is not logits:
                    logits[c].copy_(products[c])
            # softmax minus one-hot: the gradient of each head's summed cross-entropy (the 1 / B of its batch
            # mean goes into the inputs of the weight gradient and into the bias gradient)
            torch.softmax(logits, dim=-1, out=logits)
            flat = logits.view(columns * points, batch * classes)  # each label's logit is at row * C + label of its head's row
            flat.index_add_(1, rows * classes + y, torch.full((len(flat), batch), -1.0, device=x.device))
            torch.sum(logits, dim=2, out=block.bias_grad).div_(batch)
            if products is not logits:
                products.copy_(logits)
            for c in range(columns):
                repeated.copy_(inputs[c].expand_as(repeated)).div_(batch)
                torch.bmm(repeated.transpose(1, 2), products[c], out=grad[c])
            if grad is not block.weight_grad:
                block.weight_grad.copy_(grad)
            if self.config.grad_clip is not None:
                norms = (block.weight_grad.flatten(2).square().sum(-1) + block.bias_grad.square().sum(-1)).sqrt()
                scale = (self.config.grad_clip / (norms + 1e-6)).clamp(max=1.0)
                block.weight_grad.mul_(scale[..., None, None])
                block.bias_grad.mul_(scale[..., None])
        self.optimizer.step()
        self.schedule.step()

    def _scratch(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """A buffer of ``shape``, kept across steps and blocks (grown only when a larger one is asked for):
        at ImageNet shape, freshly allocated gigabytes each step cost as much as the products."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype:
            buffer = self._buffers[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buffer[:size].view(*shape)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, D) -> (N, heads, C) fp32 logits of every still-training head, in :meth:`order`."""
        return torch.cat([block.logits(x).flatten(0, 1) for block in self.blocks]).transpose(0, 1)

    def head_logits(self, x: torch.Tensor, head: tuple[int, int]) -> torch.Tensor:
        """(N, S, D) -> (N, C) fp32 logits of ONE head (column, grid point)."""
        weight, bias = self.params[head]
        return x[:, list(self.reads[head[0]])].flatten(1) @ weight.detach() + bias.detach()

    def state(self) -> dict[str, Any]:
        """Everything to resume from, as views of the live tensors (``torch.save`` writes each block's storage once)."""
        heads = [[*head, weight.detach(), bias.detach()] for head, (weight, bias) in self.params.items()]
        return {"active": self.active(), "heads": heads, "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    @classmethod
    def from_state(cls, config: LinearProbeConfig, reads: Sequence[tuple[int, ...]], shape: tuple[int, int], batches: int,
                   device: torch.device, state: Mapping[str, Any]) -> LinearHeads:  # fmt: skip
        """The heads as :meth:`state` saved them: weights, optimizer moments and schedule position."""
        heads = cls(config, reads, {int(j): points for j, points in state["active"].items()}, shape, batches, device)
        with torch.no_grad():
            for j, g, weight, bias in state["heads"]:
                heads.params[(j, g)][0].copy_(weight)
                heads.params[(j, g)][1].copy_(bias)
        heads.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            for param, views in heads._moments.items():  # back into the blocks' tensors, which the loaded copies replaced
                for name, view in zip(("exp_avg", "exp_avg_sq"), views):
                    heads.optimizer.state[param][name] = view.copy_(heads.optimizer.state[param][name])
        heads.schedule.load_state_dict(state["schedule"])
        return heads

    def keep(self, kept: set[tuple[int, int]]) -> LinearHeads:
        """The heads ``kept`` (column, grid point) with their weights, moments and learning rates, the
        others dropped. ``self`` is spent: its gradients and buffers are freed first, so that at
        most its weights and moments live beside the survivors'."""
        self._buffers.clear()
        empty = torch.empty(0, device=self.device)
        for weight, bias in self.params.values():
            weight.grad = bias.grad = None
        for block in self.blocks:
            block.weight_grad = block.bias_grad = empty
        survivors = LinearHeads(self.config, self.reads, {j: [g for g in points if (j, g) in kept] for j, points in self.active().items()},
                                self.shape, self.batches, self.device)  # fmt: skip
        with torch.no_grad():
            for head, params in survivors.params.items():
                for new, old in zip(params, self.params[head]):
                    new.copy_(old)
                    for name, value in survivors.optimizer.state[new].items():
                        value.copy_(self.optimizer.state[old][name])
        for new, old in zip(survivors.optimizer.param_groups, self.optimizer.param_groups, strict=True):
            new["lr"] = old["lr"]
        survivors.schedule.load_state_dict(self.schedule.state_dict())
        return survivors
