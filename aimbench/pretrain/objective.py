"""The AIM objective: prefix-causal next-patch prediction of normalised pixels.

Per sample a prefix length S ~ Uniform{1, ..., K-1}; the trunk attends bidirectionally inside
the prefix and causally after it (``aimbench.models.aim.prefix_causal_mask``). Targets are the
(already mean/std-normalised) input image cut into patches in MAE order (row in patch, column in
patch, channel) and each patch standardised by its own mean and unbiased variance with eps 1e-6
(as MAE and Apple's l3m ``RasterPixelLoss``). The output at position i predicts patch i+1; the
loss is the squared error averaged over a patch's values, then over the counted targets: patches
S ... K-1, never a prefix patch (the prefix is seen bidirectionally, predicting it would be trivial).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from aimbench.models.aim import AIM, PRESETS, Attention
from aimbench.pretrain.head import HeadConfig, PixelHead
from aimbench.pretrain.recipe import PretrainConfig

TARGET_EPS = 1e-6


def sample_prefix_lengths(batch: int, num_patches: int, generator: torch.Generator) -> torch.Tensor:
    """(batch,) prefix lengths drawn uniformly from 1 ... num_patches - 1."""
    if num_patches < 2:
        raise ValueError(f"the objective needs at least 2 patches, got {num_patches}")
    return torch.randint(1, num_patches, (batch,), generator=generator)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, K, patch * patch * C), patches in raster order, values in MAE order."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def normalised_targets(patches: torch.Tensor) -> torch.Tensor:
    """Each patch standardised by its own mean and unbiased variance (eps 1e-6 on the variance)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + TARGET_EPS) ** 0.5


def target_mask(prefix_lengths: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, K-1) bool: for the prediction made at position i (of patch i+1), whether it counts."""
    targets = torch.arange(1, num_patches, device=prefix_lengths.device)
    return targets[None, :] >= prefix_lengths[:, None]


def next_patch_loss(predictions: torch.Tensor, targets: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """Mean over counted targets of the per-patch mean squared error (computed in fp32)."""
    per_patch = (predictions[:, :-1].float() - targets[:, 1:].float()).pow(2).mean(dim=-1)
    mask = target_mask(prefix_lengths, predictions.shape[1])
    return (per_patch * mask).sum() / mask.sum()


class AimPretrainModel(nn.Module):
    """The trunk (exported afterwards in Apple's key layout) and the pixel head, with the loss."""

    def __init__(self, trunk: AIM, head_config: HeadConfig) -> None:
        super().__init__()
        self.trunk = trunk
        patch = trunk.config.patch_size
        self.head = PixelHead(trunk.config.width, patch * patch * trunk.config.in_chans, head_config, trunk.config.ln_eps)

    def forward(self, images: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
        patch = self.trunk.config.patch_size
        grid = (images.shape[-2] // patch, images.shape[-1] // patch)
        tokens = self.trunk(images, prefix_lengths)  # blocks under the prefix-causal mask, then the post-trunk norm
        predictions = self.head(tokens, grid)
        with torch.no_grad():
            targets = normalised_targets(patchify(images.float(), patch))
        return next_patch_loss(predictions, targets, prefix_lengths)


def init_weights(model: nn.Module) -> None:
    """l3m's AIM v1 init, parameter for parameter (checked by ``tests/pretrain/test_official_init.py``).

    Linear weights Xavier-uniform, biases zero. l3m's q, k and v are three D x D projections, each
    Xavier-uniform on its own fan, so the fused (3D, D) ``qkv`` is initialised as three blocks: Xavier
    on the whole matrix would start them with 1/sqrt(2) of l3m's spread. The patch embedding's weight
    is Xavier-uniform as a linear map of the flattened patch (MAE, l3m's ``ViTPreprocessor``); its
    bias keeps PyTorch's default (uniform, bound 1/sqrt(fan_in)), which l3m does not override.
    LayerNorms one and zero. l3m's ``SimpleDecoder`` first draws its output layer from a depth-scaled
    truncated normal, then re-initialises every linear layer of the head Xavier-uniform, so that
    layer ends Xavier-uniform too. The sin-cos position tables are computed, not parameters."""
    fused = {module.qkv for module in model.modules() if isinstance(module, Attention)}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                for block in module.weight.chunk(3 if module in fused else 1):
                    nn.init.xavier_uniform_(block)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def build_model(config: PretrainConfig) -> AimPretrainModel:
    torch.manual_seed(config.seed)  # every rank builds identical weights
    model = AimPretrainModel(AIM(replace(PRESETS[config.preset], ln_eps=config.ln_eps)), config.resolved_head)
    init_weights(model)
    return model
