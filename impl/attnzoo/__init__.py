"""Attention Zoo: a catalogue of attention mechanisms and vision backbones with clean PyTorch modules."""
from .registry import (
    create_attention,
    create_model,
    get_attn,
    list_attention,
    list_models,
    register_attention,
    register_model,
)

__version__ = "0.1.0"
__all__ = [
    "create_attention", "create_model", "get_attn", "list_attention", "list_models",
    "register_attention", "register_model",
]
