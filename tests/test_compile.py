"""No graph breaks under torch._dynamo for any registered module, and for one model of every model family.

A model family is a builder with its registered arguments, minus those that only scale it (depths, widths,
heads) or choose the attention module (each attention module is traced on its own below). Tracing every depth of
the same family repeats the same code at several minutes of CPU time; the smallest member stands for it, traced
with one block per stage (same code paths, a fraction of the tracing time).
"""
import pytest
import torch
import torch._dynamo

from attnzoo import create_attention, create_conv, create_model, list_attention, list_convs, list_models
from attnzoo.nbtools import count_params
from attnzoo.registry import model_entry

SCALE_KEYS = {"layers", "depth", "depths", "embed_dim", "embed_dims", "dims", "num_heads", "heads", "mlp_ratio",
              "mlp_ratios", "width", "widths", "width_mult", "width_multiplier", "channels", "planes", "expansion",
              "segment_dims", "min_rd", "img_size", "drop_path_rate", "stem_width", "attn_layer", "attn_kwargs",
              "attn_stages"}


def _family(name: str) -> tuple:
    entry = model_entry(name)
    return entry.builder, tuple(sorted((k, repr(v)) for k, v in entry.defaults.items() if k not in SCALE_KEYS))


def _model_representatives() -> list[str]:
    families: dict[tuple, list[str]] = {}
    for name in list_models():
        families.setdefault(_family(name), []).append(name)
    return sorted(min(names, key=_meta_params) for names in families.values())


def _meta_params(name: str) -> int:
    with torch.device("meta"):
        return count_params(create_model(name, num_classes=10))


def _assert_no_breaks(module: torch.nn.Module, *inputs) -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*inputs)
    reasons = [str(r.reason)[:200] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons


@pytest.mark.parametrize("name", list_attention())
def test_attention_traces_without_graph_breaks(name):
    _assert_no_breaks(create_attention(name, 64).eval(), torch.randn(2, 64, 7, 9))


@pytest.mark.parametrize("name", list_convs())
def test_conv_traces_without_graph_breaks(name):
    _assert_no_breaks(create_conv(name, 16, 24, 3, stride=2).eval(), torch.randn(2, 16, 9, 14))


def _shallow(name: str) -> dict:
    """Keyword arguments that give every stage of ``name`` a single block, where the builder takes them."""
    defaults = model_entry(name).defaults
    kwargs = {k: tuple(1 for _ in defaults[k]) for k in ("layers", "depths") if isinstance(defaults.get(k), tuple)}
    if isinstance(defaults.get("depth"), int) and defaults["depth"] < 50:  # transformer depth, not ResNet-50's
        kwargs["depth"] = 1
    return kwargs


@pytest.mark.parametrize("name", _model_representatives())
def test_model_family_traces_without_graph_breaks(name):
    model = create_model(name, num_classes=10, **_shallow(name)).eval()
    _assert_no_breaks(model, torch.randn(1, 3, 67, 45))
