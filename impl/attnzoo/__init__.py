"""Attention Zoo: a catalogue of attention mechanisms and vision backbones with clean PyTorch modules."""
from .registry import (
    create_attention,
    create_block,
    create_conv,
    create_model,
    get_attn,
    get_block,
    get_conv,
    list_attention,
    list_blocks,
    list_convs,
    list_models,
    register_attention,
    register_block,
    register_conv,
    register_model,
)
from .timm import load_timm_weights, timm_name

__version__ = "0.1.0"
__all__ = [
    "create_attention", "create_block", "create_conv", "create_model", "get_attn", "get_block", "get_conv",
    "list_attention", "list_blocks", "list_convs", "list_models", "register_attention", "register_block",
    "register_conv", "register_model", "load_timm_weights", "timm_name",
]
