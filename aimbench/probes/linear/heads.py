"""The still-training heads of a linear probe's grid, and one training step over all of them.

A head is (column, grid point): a column is what it reads (one source, or two concatenated: a
layer set's token kind), a grid point its (lr, wd). Columns that read as many sources and still
train the same grid points form a block (the full grid is one block of single-source columns,
plus one of concatenated ones), whose weights sit side by side in one (points, columns, K·D, C)
tensor, so a single batched product serves every head of the block. A grid point's slice of a
block is one parameter (a view), so AdamW (fused, one parameter group per grid point and decay)
updates all of them in place with a few dozen tensors, however many layer sets there are.

Forward and backward are written out (the gradient of a head's batch-mean cross-entropy is its
softmax minus the one-hot, over the batch) rather than left to autograd, so every product writes
into buffers allocated once: at ImageNet shape the grid holds gigabytes of weights, and a fresh
gradient, stacked copy or cast of them at every step costs more than the products themselves
(``benchmarks/imagenet_shape_cost.py`` times it). AdamW's moments live in the blocks too, made
before its first step, so no optimizer state is allocated tensor by tensor while training. Under
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

from aimbench.probes.config import grid_points
from aimbench.probes.linear.config import LinearProbeConfig
from aimbench.probes.schedule import clip_grads_per_head, grid_optimizer, grid_param_groups, warmup_cosine_schedule


def _optimizer_state(moments: Sequence[torch.Tensor], config: LinearProbeConfig, step_device: torch.device) -> dict[str, torch.Tensor]:
    """A parameter's optimizer state made in advance from views of its block's moments: AdamW's step
    and moments, or SGD's momentum buffer (zeros: SGD's first step then takes the gradient, as it
    does when it makes the buffer itself)."""
    if config.optimizer == "adamw":
        return {"step": torch.zeros((), dtype=torch.float32, device=step_device), "exp_avg": moments[0], "exp_avg_sq": moments[1]}
    return {"momentum_buffer": moments[0]} if moments else {}


def _grid_optimizer(config: LinearProbeConfig, named: Sequence[Mapping[str, Sequence[torch.Tensor]]], fused: bool) -> torch.optim.Optimizer:
    """The recipe's optimizer over the grid's parameter groups; fused (one kernel per tensor list) on CPU and CUDA."""
    if config.optimizer == "adamw":
        return grid_optimizer(config, named, fused)
    return torch.optim.SGD(grid_param_groups(config, named), momentum=config.momentum, fused=fused or None)


@dataclass
class _Block:
    """Columns reading the same number of sources and training the same grid points."""

    columns: list[int]
    reads: torch.Tensor  # (columns, K) source indices
    points: list[int]  # grid points still training, ascending
    weight: torch.Tensor  # (points, columns, K*D, C), fp32
    bias: torch.Tensor  # (points, columns, C)
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor
    moments: tuple[torch.Tensor, ...]  # the optimizer's per-parameter state of weight, then of bias (``config.optimizer_states`` of each)

    @classmethod
    def zeros(cls, columns: list[int], reads: list[tuple[int, ...]], points: list[int], dim: int, classes: int,
              states: int, device: torch.device) -> _Block:  # fmt: skip
        shape = (len(points), len(columns), len(reads[0]) * dim, classes)
        weight, bias = torch.zeros(shape, device=device), torch.zeros(shape[:2] + (classes,), device=device)
        index = torch.tensor(reads, dtype=torch.long, device=device)
        moments = tuple(torch.zeros_like(t) for t in [weight] * states + [bias] * states)
        return cls(columns, index, points, weight, bias, torch.zeros_like(weight), torch.zeros_like(bias), moments)

    def heads(self) -> list[tuple[int, int]]:
        """(column, grid point) of every head, in logits order: point-major."""
        return [(j, g) for g in self.points for j in self.columns]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) features -> (columns, B, K*D): what each column reads, concatenated."""
        columns, reads = self.reads.shape
        return x.index_select(1, self.reads.flatten()).view(len(x), columns, reads * x.shape[2]).transpose(0, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (points, columns, B, C) in fp32, from the fp32 weights (scoring)."""
        return torch.matmul(self.inputs(x), self.weight) + self.bias.unsqueeze(2)


class LinearHeads:
    """Every still-training head, its optimizer and schedule; :meth:`keep` drops stopped heads."""

    def __init__(self, config: LinearProbeConfig, reads: Sequence[tuple[int, ...]], active: Mapping[int, Sequence[int]],
                 shape: tuple[int, int], steps: int, device: torch.device, init_seeds: Sequence[int] | None = None) -> None:  # fmt: skip
        """``reads[j]``: the sources column j reads; ``active``: column -> its grid points still
        training; ``steps``: the optimizer steps of the whole schedule; ``init_seeds``: one per head
        in grid order (column, then grid point), the seed of its N(0, init_std^2) weights (None: zeros,
        as heads about to be restored from a state are)."""
        self.config, self.reads, self.shape, self.steps, self.device = config, list(reads), shape, steps, device
        self.dtype = torch.bfloat16 if config.head_precision == "bf16" else torch.float32
        states = config.optimizer_states
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for j in sorted(active):
            if active[j]:
                groups.setdefault((len(self.reads[j]), tuple(sorted(active[j]))), []).append(j)
        self.blocks = [_Block.zeros(cols, [self.reads[j] for j in cols], list(points), *shape, states, device)
                       for (_, points), cols in groups.items()]  # fmt: skip
        # each head's (block, point, column): where its weights sit
        self.where = {head: (b, block.points.index(head[1]), block.columns.index(head[0]))
                      for b, block in enumerate(self.blocks) for head in block.heads()}  # fmt: skip
        points = grid_points(config)
        if init_seeds is not None and config.init_std > 0:
            for (j, g), (b, p, c) in self.where.items():
                generator = torch.Generator().manual_seed(init_seeds[j * len(points) + g])
                weight = self.blocks[b].weight[p, c]
                weight.copy_(torch.randn(weight.shape, generator=generator).mul_(config.init_std))
        named: list[dict[str, list[torch.Tensor]]] = [{"weight": [], "bias": []} for _ in points]
        made: dict[torch.Tensor, dict[str, torch.Tensor]] = {}  # the optimizer's state is keyed by Tensor
        fused = device.type in ("cpu", "cuda")
        for block in self.blocks:
            for p, g in enumerate(block.points):
                for name, tensor, grad, moments in (("weight", block.weight, block.weight_grad, block.moments[:states]),
                                                    ("bias", block.bias, block.bias_grad, block.moments[states:])):  # fmt: skip
                    param = torch.nn.Parameter(tensor[p])
                    param.grad = grad[p]
                    named[g][name].append(param)
                    made[param] = _optimizer_state([m[p] for m in moments], config, device if fused else torch.device("cpu"))
        self.optimizer = _grid_optimizer(config, named, fused)
        self.optimizer.state.update(made)  # the optimizer finds its state made, as views of the blocks' moments
        self.schedule = warmup_cosine_schedule(self.optimizer, 1, steps, config.warmup_fraction)
        self._buffers: dict[str, torch.Tensor] = {}

    def order(self) -> list[tuple[int, int]]:
        """(column, grid point) of every still-training head, in the order scores are returned."""
        return [head for block in self.blocks for head in block.heads()]

    def active(self) -> dict[int, list[int]]:
        active: dict[int, list[int]] = {}
        for j, g in sorted(self.where):
            active.setdefault(j, []).append(g)
        return active

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step of every head on standardised features ``x`` (B, S, D) and labels ``y``.

        Per column, one product serves all its grid points: its inputs (B, K*D) against its points'
        weights side by side (K*D, points x C), copied in that order (and in bf16, under bf16) from
        the blocks' (points, columns, K*D, C); the gradients come back in that order and are copied
        into the blocks'. Neither the inputs nor anything of the weights' size is allocated per step."""
        batch = len(y)
        for block in self.blocks:
            points, columns, width, classes = block.weight.shape
            wide = points * classes
            inputs = block.inputs(x).to(self.dtype)  # (columns, B, K*D), a fresh tensor
            weight = self._scratch("weight", (columns, width, points, classes), self.dtype)
            weight.copy_(block.weight.permute(1, 2, 0, 3))
            bias = block.bias.permute(1, 0, 2).reshape(columns, 1, wide).to(self.dtype)
            logits = self._scratch("logits", (columns, batch, points, classes), torch.float32)
            products = logits if self.dtype == torch.float32 else self._scratch("products", logits.shape, self.dtype)
            torch.baddbmm(bias, inputs, weight.view(columns, width, wide), out=products.view(columns, batch, wide))
            if products is not logits:
                logits.copy_(products)
            # softmax minus one-hot: the gradient of each head's summed cross-entropy (the 1 / B of its
            # batch mean goes into the inputs of the weight gradient and into the bias gradient)
            torch.softmax(logits, dim=-1, out=logits)
            rows = torch.arange(batch, device=x.device)[:, None] * wide + torch.arange(points, device=x.device) * classes
            labels = (rows + y[:, None]).flatten()  # each (image, point)'s label logit in a column's row of logits
            logits.view(columns, batch * wide).index_add_(1, labels, torch.full((columns, len(labels)), -1.0, device=x.device))
            block.bias_grad.copy_(logits.sum(dim=1).transpose(0, 1)).div_(batch)
            if products is not logits:
                products.copy_(logits)
            grad = self._scratch("grad", (columns, width, points, classes), self.dtype)
            torch.bmm(inputs.div_(batch).transpose(1, 2), products.view(columns, batch, wide), out=grad.view(columns, width, wide))
            block.weight_grad.copy_(grad.permute(2, 0, 1, 3))
            if self.config.grad_clip is not None:  # per head: (points, columns) flattened into one head axis
                clip_grads_per_head([block.weight_grad.flatten(0, 1), block.bias_grad.flatten(0, 1)], self.config.grad_clip)
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

    def head(self, head: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The (K*D, C) weight and (C,) bias of ONE head (column, grid point): views of its block."""
        b, p, c = self.where[head]
        return self.blocks[b].weight[p, c], self.blocks[b].bias[p, c]

    def head_logits(self, x: torch.Tensor, head: tuple[int, int]) -> torch.Tensor:
        """(N, S, D) -> (N, C) fp32 logits of ONE head (column, grid point)."""
        weight, bias = self.head(head)
        return x[:, list(self.reads[head[0]])].flatten(1) @ weight + bias

    def _per_head(self) -> dict[tuple[int, int], list[torch.Tensor]]:
        """Each head's weight, bias and their AdamW moments, as views of its block."""
        out = {}
        for head, (b, p, c) in self.where.items():
            block = self.blocks[b]
            moments = [m[p, c] for m in block.moments]
            out[head] = [block.weight[p, c], block.bias[p, c], *moments]
        return out

    def _progress(self) -> dict[str, Any]:
        """Where training stands, the same for every head: AdamW's step count (SGD keeps none), the groups' learning rates, the schedule."""
        state: dict[str, Any] = next(iter(self.optimizer.state.values()), {})
        step = float(state["step"]) if "step" in state else 0.0
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        return {"adamw_step": step, "lrs": lrs, "schedule": self.schedule.state_dict()}

    def state(self) -> dict[str, Any]:
        """Everything to resume from, as views of the live tensors (``torch.save`` writes each block's storage once)."""
        heads = [[*head, *tensors] for head, tensors in self._per_head().items()]
        return {"active": self.active(), "heads": heads, **self._progress()}

    def _restore(self, heads: Mapping[tuple[int, int], Sequence[torch.Tensor]], progress: Mapping[str, Any]) -> None:
        """Weights and moments per head, then where training stands (as :meth:`_progress` gave it)."""
        with torch.no_grad():
            for head, tensors in self._per_head().items():
                for mine, saved in zip(tensors, heads[head], strict=True):
                    mine.copy_(saved)
            for state in self.optimizer.state.values():
                if "step" in state:
                    state["step"].fill_(progress["adamw_step"])
        for group, lr in zip(self.optimizer.param_groups, progress["lrs"], strict=True):
            group["lr"] = lr
        self.schedule.load_state_dict(dict(progress["schedule"]))

    @classmethod
    def from_state(cls, config: LinearProbeConfig, reads: Sequence[tuple[int, ...]], shape: tuple[int, int], steps: int,
                   device: torch.device, state: Mapping[str, Any]) -> LinearHeads:  # fmt: skip
        """The heads as :meth:`state` saved them."""
        heads = cls(config, reads, {int(j): points for j, points in state["active"].items()}, shape, steps, device)
        heads._restore({(j, g): tensors for j, g, *tensors in state["heads"]}, state)
        return heads

    def keep(self, kept: set[tuple[int, int]]) -> LinearHeads:
        """The heads ``kept`` (column, grid point) with their weights, moments and learning rates, the
        others dropped. ``self`` is spent: its gradients and buffers are freed first, so that at
        most its weights and moments live beside the survivors'."""
        self._buffers.clear()
        empty = torch.empty(0, device=self.device)
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        for block in self.blocks:
            block.weight_grad = block.bias_grad = empty
        survivors = LinearHeads(self.config, self.reads, {j: [g for g in points if (j, g) in kept] for j, points in self.active().items()},
                                self.shape, self.steps, self.device)  # fmt: skip
        survivors._restore({head: tensors for head, tensors in self._per_head().items() if head in kept}, self._progress())
        return survivors
