"""Sequencer: BiLSTM2D against a column-by-column and row-by-row reference, its cross-shaped receptive field, the
block's two residual branches, stage shapes at odd sizes, Table 1's depths and bad arguments."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.registry import model_entry


def _mix_reference(m, x):
    """(N, H, W, C): each column through rnn_v and each row through rnn_h on its own, concatenated, then FC."""
    n, h, w, c = x.shape
    v = torch.stack([m.rnn_v(x[:, :, j])[0] for j in range(w)], dim=2)   # (N, H, W, 2D)
    r = torch.stack([m.rnn_h(x[:, i])[0] for i in range(h)], dim=1)       # (N, H, W, 2D)
    return torch.cat([v, r], -1) @ m.fc.weight.T + m.fc.bias


def test_bilstm2d_runs_every_column_and_row_as_a_sequence():
    torch.manual_seed(0)
    m = create_attention("bilstm2d", 16).double().eval()
    assert (m.rnn_v.hidden_size, m.fc.in_features) == (4, 16)  # D = C / 4 by default, FC: 4D -> C
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(m.mix(x), _mix_reference(m, x))
    maps = x.permute(0, 3, 1, 2)
    torch.testing.assert_close(m(maps), _mix_reference(m, x).permute(0, 3, 1, 2))


def test_bilstm2d_sees_exactly_the_row_and_column_of_each_token():
    torch.manual_seed(0)
    m = create_attention("bilstm2d", 8, hidden_size=3).double().eval()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 2, 4].sum().backward()
    reach = x.grad[0].abs().sum(0) > 0
    cross = torch.zeros(5, 6, dtype=torch.bool)
    cross[2, :] = True
    cross[:, 4] = True
    assert torch.equal(reach, cross)


def test_block_is_lstm_mixing_then_mlp_each_with_pre_norm_and_residual():
    model = create_model("sequencer2d_s", layers=(1, 1, 1, 1), num_classes=4).double().eval()
    block = model.stages[1].blocks[0]
    x = torch.randn(2, 3, 4, 384, dtype=torch.float64)
    u = x + _mix_reference(block.rnn_tokens, F.layer_norm(x, (384,), block.norm1.weight, block.norm1.bias, 1e-6))
    mlp = block.mlp_channels
    y = F.layer_norm(u, (384,), block.norm2.weight, block.norm2.bias, 1e-6)
    expected = u + F.gelu(y @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
    torch.testing.assert_close(block(x), expected)


def test_stage_shapes_at_an_odd_size_and_the_smallest_input():
    model = create_model("sequencer2d_s", layers=(1, 1, 1, 1), num_classes=4).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        t = model.stem(x).permute(0, 2, 3, 1)
        shapes = []
        for stage in model.stages:
            t = stage(t)
            shapes.append(tuple(t.shape[1:]))
        assert shapes == [(9, 6, 192), (4, 3, 384), (4, 3, 384), (4, 3, 384)]
        torch.testing.assert_close(model(x), model.head(model.norm(t).mean((1, 2))))
        assert model(torch.randn(1, 3, 14, 15)).shape == (1, 4)
    with pytest.raises(ValueError, match="at least 14x14 pixels"):
        model(torch.randn(1, 3, 13, 40))


@pytest.mark.parametrize("name,layers", [("sequencer2d_s", (4, 3, 8, 3)), ("sequencer2d_m", (4, 3, 14, 3)),
                                         ("sequencer2d_l", (8, 8, 16, 4))])
def test_variants_are_table_1(name, layers):
    assert model_entry(name).defaults == dict(layers=layers)


def test_shared_layout_of_table_1():
    with torch.device("meta"):
        model = create_model("sequencer2d_s")
    assert model.stem.kernel_size == (7, 7) and model.stages[1].downsample.down.stride == (2, 2)
    assert [model.stages[i].blocks[0].rnn_tokens.rnn_h.hidden_size for i in range(4)] == [48, 96, 96, 96]
    assert model.stages[2].downsample.down.kernel_size == (1, 1)
    assert model.stages[0].blocks[0].mlp_channels.fc1.out_features == 576  # MLP ratio 3


@pytest.mark.parametrize("kwargs", [dict(layers=(1, 1, 1)), dict(hidden_sizes=(48, 96, 96, 0)),
                                    dict(patch_sizes=(7, 2, 1)), dict(mlp_ratios=(3, 3, 3, 0)),
                                    dict(num_classes=0), dict(drop_path_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("sequencer2d_s", **kwargs)


def test_bilstm2d_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("bilstm2d", 16, hidden_size=0)


def test_bilstm2d_equals_timms_lstm2d_on_the_same_weights():
    timm_sequencer = pytest.importorskip("timm.models.sequencer")
    torch.manual_seed(0)
    theirs = timm_sequencer.LSTM2d(16, 4).double().eval()
    ours = create_attention("bilstm2d", 16).double().eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(ours.mix(x), theirs(x))


def test_stochastic_depth_rises_linearly_over_all_blocks_as_the_authors_code():
    with torch.device("meta"):
        model = create_model("sequencer2d_s", layers=(2, 1, 1, 1), drop_path_rate=0.4)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_bilstm2d_under_cpu_bf16_autocast_runs_its_lstms_in_float32():
    """oneDNN has no bfloat16 LSTM: under CPU autocast the LSTMs see float32 (also for bfloat16 inputs), the FC
    runs in bfloat16, and forward and backward match the float32 module to bfloat16 precision."""
    torch.manual_seed(0)
    m = create_attention("bilstm2d", 16)
    seen = []
    for rnn in (m.rnn_v, m.rnn_h):
        rnn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    ref = m(x)
    ref.square().sum().backward()
    ref_grads = [x.grad.clone(), m.rnn_v.weight_ih_l0.grad.clone()]
    x.grad = None
    m.zero_grad()
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        assert m(x.detach().bfloat16()).dtype == torch.bfloat16
    assert seen == [torch.float32] * 4 and out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    assert m.rnn_v.weight_ih_l0.grad.dtype == torch.float32
    for got, want in zip([x.grad, m.rnn_v.weight_ih_l0.grad], ref_grads):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * want.abs().max().item())
