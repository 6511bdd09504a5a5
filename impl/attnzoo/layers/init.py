"""Weight initialization shared by the transformer-style models."""
import torch.nn as nn


def trunc_normal_init(m: nn.Module, std: float = 0.02, types: tuple = (nn.Linear,)) -> None:
    """ViT-style init for ``model.apply``: truncated normal weights (std 0.02) and zero biases for ``types``."""
    if isinstance(m, types):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def xavier_mlp_init(model: nn.Module) -> None:
    """timm's init of its MLP-like models (mlp_mixer._init_weights, also Sequencer's): Xavier-uniform linear
    weights with biases ~ N(0, 1e-6) in submodules named "*mlp*" and zero elsewhere, LeCun-normal convolutions (cut
    at 2 std), a zero ``head``; LayerNorms and LSTMs keep PyTorch's defaults (which are timm's). Meta tensors are
    left alone (there is nothing to fill, and ``normal_`` is slow to trace on them)."""
    for name, m in model.named_modules():
        if getattr(m, "weight", None) is None or m.weight.is_meta:
            continue
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight) if name == "head" else nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=1e-6) if "mlp" in name else nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            std = (1.0 / m.weight[0].numel()) ** 0.5 / 0.87962566103423978  # unit normal cut at +-2, rescaled
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv_fan_out_init(model: nn.Module, zero_bias: bool = False) -> None:
    """He-normal (fan-out, ReLU gain) weights for every Conv2d of ``model``, as torchvision's CNNs initialise them;
    with ``zero_bias`` their biases zeroed too (otherwise left at PyTorch's default). Meta tensors are left alone
    (nothing to fill; ``normal_`` is slow to trace on them)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
