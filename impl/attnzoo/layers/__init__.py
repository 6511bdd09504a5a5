"""Shared building blocks: one place for each, reused by every paper's file."""
from .attention import MultiHeadSelfAttention
from .conv import ConvNormAct
from .create_act import create_act
from .drop import DropPath, drop_path_rates, stage_drop_path_rates
from .dynamic import per_sample_conv2d
from .geometry import cached_geometry, key_minus_query, resolve_device
from .gates import PooledConv1x1, SpatialGate
from .head import pooled_logits
from .init import conv_fan_out_init, trunc_normal_init
from .layer_scale import layer_scale
from .helpers import (check_choice, check_conv_args, check_images, check_stages, check_train_batch, check_divisible, check_positive_int, check_positive_ints, check_repeats, heads_for_width, make_divisible, reduced_channels,
                      to_2tuple)
from .mlp import Mlp
from .norm import LayerNorm2d
from .patch_embed import PatchEmbed, pad_to_multiple
from .pos_embed import linear_resize_matrix, patch_grid, resize_maps, resize_pos_grid
from .tokens import TokenAttention, check_hw, tokens_to_grid
from .window import window_partition, window_reverse

__all__ = [
    "MultiHeadSelfAttention", "PooledConv1x1", "SpatialGate", "ConvNormAct", "create_act", "DropPath", "drop_path_rates", "check_choice", "check_divisible",
    "check_positive_int", "check_positive_ints", "check_repeats", "check_conv_args", "check_images", "check_stages", "check_train_batch", "TokenAttention", "make_divisible", "reduced_channels", "to_2tuple", "Mlp", "LayerNorm2d", "patch_grid", "linear_resize_matrix", "resize_maps", "resize_pos_grid", "check_hw", "tokens_to_grid", "trunc_normal_init", "conv_fan_out_init",
    "per_sample_conv2d", "heads_for_width", "window_partition", "window_reverse", "PatchEmbed",
    "pad_to_multiple", "layer_scale", "stage_drop_path_rates",
    "pooled_logits", "cached_geometry", "key_minus_query", "resolve_device",
]
