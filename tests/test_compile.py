"""No graph breaks under torch._dynamo for any registered module, and for one model of every model family.

A model family is a builder with its registered arguments, minus those that only scale it (depths, widths,
heads) or choose the attention module (each attention module is traced on its own below; see conftest.py).
Tracing every depth of the same family repeats the same code at several minutes of CPU time; the smallest member
stands for it, traced with one block per stage (same code paths, a fraction of the tracing time).
"""
import pytest
import torch
import torch._dynamo

from attnzoo import create_attention, create_block, create_conv, create_model, list_attention, list_blocks, list_convs


def _assert_no_breaks(module: torch.nn.Module, *inputs) -> None:
    torch._dynamo.reset()
    # dynamo leaves a frame with an nn.LSTM (Sequencer's BiLSTM2D) untraced unless RNNs are allowed; with them
    # allowed, the rest of such a module must still trace in one graph
    with torch._dynamo.config.patch(allow_rnn=True):
        explanation = torch._dynamo.explain(module)(*inputs)
    reasons = [str(r.reason)[:200] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons


@pytest.mark.parametrize("name", list_attention())
def test_attention_traces_without_graph_breaks(name):
    _assert_no_breaks(create_attention(name, 64).eval(), torch.randn(2, 64, 7, 9))


@pytest.mark.parametrize("name", list_convs())
def test_conv_traces_without_graph_breaks(name):
    _assert_no_breaks(create_conv(name, 16, 24, 3, stride=2).eval(), torch.randn(2, 16, 9, 14))


@pytest.mark.parametrize("name", list_blocks())
def test_block_traces_without_graph_breaks(name, block_inputs):
    block = create_block(name, 64, 64).eval()
    _assert_no_breaks(block, *block_inputs(block, 64, 2, 7, 9))


def test_model_family_traces_without_graph_breaks(family_model, shallow, cheap_init):
    name = family_model
    with cheap_init():
        model = create_model(name, num_classes=10, **shallow(name)).eval()
    _assert_no_breaks(model, torch.randn(1, 3, 67, 45))
