"""DeiT: data-efficient image transformers and distillation through attention (Touvron et al., ICML 2021,
arXiv:2012.12877).

DeiT-Ti/S/B (Table 1: widths 192/384/768 with 3/6/12 heads of 64 channels, 12 blocks, 16 x 16 patches) *are* ViTs:
the paper changes how they are trained (ImageNet only, strong augmentation and regularisation), not the
network. They are registered here as data on our ``VisionTransformer`` (``deit_*_patch16_224``), identical to
timm's ``deit_*_patch16_224``, which use timm's VisionTransformer class.

The architectural contribution is the distillation token (Sec. 4, Fig. 2): a second learned token, appended
after the class token, that passes through every block like it and whose final embedding feeds its own linear
head. Its head is trained to reproduce a teacher's prediction (hard distillation: the teacher's argmax label,
Eq. 3) while the class head learns the true label. ``DistilledVisionTransformer`` adds ``dist_token`` (with its
own position embedding, so the position embeddings cover 2 + L tokens), ``head_dist`` and the two-token
forward, as the authors' ``DistilledVisionTransformer`` (facebookresearch/deit, models.py lines 20-59).

Outputs: in eval mode the average of the two heads' logits, as the authors' code does at inference (models.py
lines 55-59; ``head_fusion="logits"``). The paper describes the fusion of the joint classifiers as adding the two
softmax outputs (Sec. 4, "joint classifiers"); ``head_fusion="softmax"`` returns log((softmax(Z_cls) +
softmax(Z_dist)) / 2), log-probabilities whose argmax is that late fusion's. In training, the authors' code returns the
pair (class logits, distillation logits) for their ``DistillationLoss``; because every registered model of the
zoo returns (N, num_classes) logits, we return the pair only when ``distilled_training=True`` (constructor or
``set_distilled_training()``), as timm does, and the average otherwise. ``forward_heads(x)`` always returns the
pair. ``distillation_loss`` is the authors' loss (losses.py lines 10-70).

Any input size works as for ViT (padding to whole patches, position embeddings of the patch grid resized;
the two token positions are kept).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_choice, trunc_normal_init
from ..registry import register_model
from .vit import VisionTransformer


class DistilledVisionTransformer(VisionTransformer):
    """(N, in_chans, H, W) -> (N, num_classes) (eval: mean of both heads) or, when ``distilled_training`` and in
    training mode, the pair (class-token logits, distillation-token logits).

    Args: those of ``VisionTransformer``, plus ``distilled_training`` (default False) and ``head_fusion``
    ("logits", the authors' code, or "softmax", the paper's text), see the module docstring.
    """

    num_prefix_tokens = 2  # class and distillation tokens: position_embedding keeps both positions, resizes the grid

    def __init__(self, *args, distilled_training: bool = False, head_fusion: str = "logits", **kwargs):
        self.head_fusion = check_choice("head_fusion", head_fusion, ("logits", "softmax"))
        super().__init__(*args, **kwargs)
        dim = self.num_features
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.grid ** 2, dim))
        self.head_dist = nn.Linear(dim, self.head.out_features)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_init(self.head_dist)
        self.distilled_training = bool(distilled_training)

    def set_distilled_training(self, enable: bool = True) -> "DistilledVisionTransformer":
        """Return the (class, distillation) logits pair in training mode (the authors' training forward)."""
        self.distilled_training = bool(enable)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 2 + L, D) normalized tokens: class token, distillation token, patches."""
        x, grid_hw = self.patch_embed(x)
        n = x.shape[0]
        x = torch.cat([self.cls_token.expand(n, -1, -1), self.dist_token.expand(n, -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(grid_hw))
        return self.norm(self.blocks(x))

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-token logits, distillation-token logits), each (N, num_classes)."""
        tokens = self.forward_features(x)
        return self.head(tokens[:, 0]), self.head_dist(tokens[:, 1])

    def forward(self, x: torch.Tensor):
        cls_logits, dist_logits = self.forward_heads(x)
        if self.training and self.distilled_training:
            return cls_logits, dist_logits
        return fuse_heads(cls_logits, dist_logits, self.head_fusion)


def fuse_heads(cls_logits: torch.Tensor, dist_logits: torch.Tensor, mode: str = "logits") -> torch.Tensor:
    """The inference output from both heads: their mean ("logits", the authors' code) or the log of their mean
    softmax ("softmax", the paper's late fusion; log-probabilities)."""
    if check_choice("mode", mode, ("logits", "softmax")) == "logits":
        return (cls_logits + dist_logits) / 2
    return torch.logaddexp(F.log_softmax(cls_logits, dim=-1), F.log_softmax(dist_logits, dim=-1)) - math.log(2)


def distillation_loss(outputs, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                      kind: str = "hard", alpha: float = 0.5, tau: float = 1.0, base_criterion=F.cross_entropy,
                      kl_reduction: str = "numel") -> torch.Tensor:
    """The authors' DeiT loss (losses.py lines 25-70): (1 - alpha) base(class logits, labels) + alpha distill.

    ``outputs``: the (class logits, distillation logits) pair (or class logits alone with ``kind="none"``).
    ``kind="hard"`` (the paper's choice, Eq. 3 with alpha = 1/2): cross-entropy of the distillation logits with the
    teacher's argmax. ``kind="soft"`` (Eq. 2): tau^2 KL(softmax(teacher / tau) || softmax(student / tau)); the
    authors' code divides the summed KL by the number of logits (``kl_reduction="numel"``, their legacy choice,
    issue #61); ``kl_reduction="batchmean"`` divides by the batch size, the KL per sample of the paper's Eq. 2.
    """
    check_choice("kind", kind, ("none", "soft", "hard"))
    check_choice("kl_reduction", kl_reduction, ("numel", "batchmean"))
    if isinstance(outputs, torch.Tensor):
        if kind != "none":
            raise ValueError("distillation needs the (class logits, distillation logits) pair: build the model "
                             "with distilled_training=True or call model.forward_heads(x)")
        return base_criterion(outputs, labels)
    cls_logits, dist_logits = outputs
    base = base_criterion(cls_logits, labels)
    if kind == "none":
        return base
    if teacher_logits is None:
        raise ValueError(f"kind={kind!r} distillation needs teacher_logits")
    teacher_logits = teacher_logits.detach()
    if kind == "hard":
        distill = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
    else:
        kl = F.kl_div(F.log_softmax(dist_logits / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                      reduction="sum", log_target=True)
        denom = dist_logits.numel() if kl_reduction == "numel" else dist_logits.shape[0]
        distill = kl * tau * tau / denom
    return base * (1 - alpha) + distill * alpha


# DeiT Table 1: ViT-Ti/S/B at 224 with 16 x 16 patches (the plain models are our VisionTransformer, so timm's
# rules for ViT apply; the distilled ones add dist_token / head_dist under timm's names, so no rename either).
_VARIANTS = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"deit_{_size}_patch16_224", VisionTransformer, timm=f"deit_{_size}_patch16_224",
                   img_size=224, patch_size=16, **_cfg)
    register_model(f"deit_{_size}_distilled_patch16_224", DistilledVisionTransformer,
                   timm=f"deit_{_size}_distilled_patch16_224", img_size=224, patch_size=16, **_cfg)
