"""The registry's contract: names, wildcards, duplicates, attn_layer resolution."""
import pytest
import torch.nn as nn

from attnzoo import create_attention, create_model, get_attn, list_attention, list_models, register_attention
from attnzoo.registry import register_model


def test_wildcards():
    assert "resnet50" in list_models("resnet*")
    assert all(n.startswith("vit_") for n in list_models("vit_*"))
    assert set(list_models(["resnet18", "vit_base*"])) == {"resnet18", "vit_base_patch16_224"}
    assert list_attention("se") == ["se"]


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_attention("se", nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet50", nn.Identity)


def test_unknown_names_raise_value_error_with_hint():
    with pytest.raises(ValueError, match="unknown attention 'see'"):
        create_attention("see", 8)
    with pytest.raises(ValueError, match="did you mean"):
        create_model("resnet5")


def test_variant_is_data_and_kwargs_override():
    se50 = create_model("se_resnet50", num_classes=7)
    plain = create_model("resnet50", attn_layer="se", num_classes=7)
    assert sum(p.numel() for p in se50.parameters()) == sum(p.numel() for p in plain.parameters())
    assert se50.head.out_features == 7


def test_attn_layer_accepts_name_callable_or_none():
    assert get_attn(None) is None
    factory = get_attn("se", rd_ratio=0.25)
    assert factory(32).fc1.out_channels == 8
    custom = create_model("resnet18", attn_layer=lambda c: nn.BatchNorm2d(c), num_classes=3)
    assert isinstance(custom.stages[0][0].attn, nn.BatchNorm2d)
    with pytest.raises(ValueError):
        get_attn(3.5)


def test_bad_model_arguments_raise_value_error():
    with pytest.raises(ValueError):
        create_model("resnet50", num_classes=0)
    with pytest.raises(ValueError):
        create_model("vit_base_patch16_224", img_size=100)
    with pytest.raises(ValueError):
        create_model("resnet50", attn_layer="no_such_attention")
