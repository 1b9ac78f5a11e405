"""Where a plan's time comes from: a throughput measured here, or one assumed for a GPU one does not have.

Measured (:func:`calibrate`): one randomly initialised transformer block of the card's width and
heads, at its token count, on the plan's device. A single timing is not a number to budget with
on a shared machine (one busy moment made a block look 250 times slower), so the block is warmed
up, then timed repeatedly (at least :data:`MIN_REPS` times and :data:`MIN_SECONDS` seconds) on
enough images to be a real workload, and the rate is the median; the spread (half the
interquartile range of the timings, relative to their median) says how far repeated plans may
differ. On a CPU it is timed on one thread and scaled to the run's threads (see :func:`calibrate`).

Assumed (:func:`assumed_rate`): a GPU from :data:`GPUS` (its vendor's dense peak for the dtype)
or a peak given in TFLOP/s, times a stated utilisation, because plans are made on login nodes
without the GPU they budget for. Peaks are the datasheets' dense (no sparsity) tensor-core numbers
for bf16/fp16 and the non-tensor-core number for fp32 (PyTorch computes fp32 matmuls in full
fp32 unless told to use TF32).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aimbench.errors import UserError, unknown_name

if TYPE_CHECKING:
    import torch

MIN_REPS = 5  # timed forwards of the calibration block, after the warm-up
MIN_SECONDS = 1.0  # and at least this long in all, so a fast block is timed over many forwards
MAX_REPS = 50
WARM_UP = 2  # untimed forwards first: allocation, kernel choice, thread pools
THREAD_EFFICIENCY = 0.8  # what each CPU thread past the first adds, of the first's rate (2 cores here: 1.8x one)
DEFAULT_UTILISATION = 0.4  # of the assumed peak: what well-fed dense ViT forwards reach on current GPUs


@dataclass(frozen=True)
class Rate:
    """FLOP/s, and how much repeated measurements of it spread (0 for an assumed rate)."""

    flops_per_second: float
    spread: float = 0.0  # relative: half the interquartile range of the timings over their median

    def describe(self) -> str:
        tera = self.flops_per_second >= 1e12
        shown = f"{self.flops_per_second / (1e12 if tera else 1e9):.3g} {'T' if tera else 'G'}FLOP/s"
        return f"{shown} ±{100 * self.spread:.0f}%" if self.spread else shown


@dataclass(frozen=True)
class KnownGpu:
    """A GPU a plan may assume: its dense peaks (TFLOP/s) and memory, with where they come from."""

    name: str
    bf16_tflops: float  # also fp16
    fp32_tflops: float
    memory_gb: float
    source: str

    def peak(self, dtype: str) -> float:
        return 1e12 * (self.fp32_tflops if dtype == "fp32" else self.bf16_tflops)


GPUS: dict[str, KnownGpu] = {
    "h100": KnownGpu("NVIDIA H100 SXM5 80GB", 989, 67, 80, "NVIDIA H100 Tensor Core GPU datasheet (SXM5, dense)"),
    "h200": KnownGpu("NVIDIA H200 SXM 141GB", 989, 67, 141, "NVIDIA H200 Tensor Core GPU datasheet (SXM, dense)"),
    "a100": KnownGpu("NVIDIA A100 SXM4 80GB", 312, 19.5, 80, "NVIDIA A100 Tensor Core GPU datasheet (SXM4, dense)"),
    "l40s": KnownGpu("NVIDIA L40S 48GB", 362, 91.6, 48, "NVIDIA L40S datasheet (dense)"),
    "v100": KnownGpu("NVIDIA V100 SXM2 32GB", 125, 15.7, 32, "NVIDIA V100 Tensor Core GPU datasheet (SXM2)"),
}


@dataclass(frozen=True)
class Assumption:
    """A device a plan is made for without having it: a known GPU, or a peak in TFLOP/s, at a utilisation."""

    gpu: KnownGpu | None
    tflops: float | None  # replaces the GPU's peak (every dtype) when given
    utilisation: float

    @classmethod
    def of(cls, gpu: str | None, tflops: float | None, utilisation: float | None) -> Assumption | None:
        """The assumption the options name (None when they name none); bad values are one error."""
        if gpu is None and tflops is None:
            if utilisation is not None:
                raise UserError("--utilisation scales an assumed device; give --assume-gpu or --assume-tflops too")
            return None
        if gpu is not None and gpu.lower() not in GPUS:
            raise unknown_name("GPU", gpu, GPUS)
        if tflops is not None and not 0 < tflops < float("inf"):
            raise UserError(f"--assume-tflops must be a positive number, got {tflops}")
        share = DEFAULT_UTILISATION if utilisation is None else utilisation
        if not 0 < share <= 1:
            raise UserError(f"--utilisation must be in (0, 1], got {share}")
        return cls(GPUS[gpu.lower()] if gpu is not None else None, tflops, share)

    def rate(self, dtype: str) -> Rate:
        peak = 1e12 * self.tflops if self.tflops is not None else self.gpu.peak(dtype) if self.gpu is not None else 0.0
        return Rate(peak * self.utilisation)

    @property
    def memory_gb(self) -> float | None:
        return self.gpu.memory_gb if self.gpu is not None else None

    def describe(self) -> str:
        peak = f"{self.tflops:g} TFLOP/s" if self.tflops is not None else f"the {self.gpu.name}'s peak" if self.gpu else ""
        source = f" ({self.gpu.source})" if self.gpu is not None and self.tflops is None else ""
        return f"{peak}{source} at {100 * self.utilisation:.0f}% utilisation"


def calibrate(dim: int, heads: int, tokens: int, dtype: str, device: torch.device | str, batch: int = 1) -> Rate:
    """The measured rate of one randomly initialised transformer block (AIM's, the card's width and
    heads) on ``batch`` images of ``tokens`` tokens; see the module docstring. One block is enough
    (a forward is ``depth`` of them) and cheap even at 7B width.

    On a CPU the block is timed on one thread and the rate scaled to the threads a run uses at
    :data:`THREAD_EFFICIENCY`: a busy core moves a multi-threaded timing several-fold between two
    plans (every operation waits for the slowest thread), a single-threaded one by a few percent."""
    import torch

    if torch.device(device).type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = _timed_block(dim, heads, tokens, dtype, device, batch)
        finally:
            torch.set_num_threads(threads)
        return Rate(one.flops_per_second * (1 + THREAD_EFFICIENCY * (threads - 1)), one.spread)
    return _timed_block(dim, heads, tokens, dtype, device, batch)


def _timed_block(dim: int, heads: int, tokens: int, dtype: str, device: torch.device | str, batch: int) -> Rate:
    import torch

    from aimbench.dtypes import torch_dtype
    from aimbench.models.aim import AimConfig, Block

    with torch.device("meta"):
        block = Block(AimConfig(width=dim, depth=1, heads=heads))
    block = block.to_empty(device=device).to(torch_dtype(dtype)).eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, 0.02)
    x = torch.randn(batch, tokens, dim, device=device, dtype=torch_dtype(dtype))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(WARM_UP):
            block(x)
        while len(times) < MAX_REPS and (len(times) < MIN_REPS or sum(times) < MIN_SECONDS):
            sync()
            start = time.perf_counter()
            block(x)
            sync()
            times.append(time.perf_counter() - start)
    return rate_of(times, batch * block_flops(tokens, dim))


def rate_of(times: list[float], flops: float) -> Rate:
    """The median rate of timed runs of ``flops`` each, and the spread of their timings."""
    median = statistics.median(times)
    low, _, high = statistics.quantiles(times, n=4) if len(times) > 1 else (median, median, median)
    return Rate(flops / max(median, 1e-9), (high - low) / 2 / max(median, 1e-9))


def block_flops(tokens: int, dim: int) -> int:
    """FLOPs of one pre-norm ViT block's forward (MLP ratio 4) on one image of N = ``tokens`` tokens
    of width D = ``dim``, counting a multiply-add as 2 FLOPs::

        24 N D^2 + 4 N^2 D

    The matrix products with weights are 12 D^2 multiply-adds per token (qkv 3 D^2, output
    projection D^2, MLP 4 D^2 + 4 D^2); attention adds N^2 D for the scores and N^2 D for the
    weighted values. Norms, softmax and GELU (O(N D)) are left out."""
    return 24 * tokens * dim**2 + 4 * tokens**2 * dim
