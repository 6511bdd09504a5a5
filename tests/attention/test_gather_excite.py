import pytest
import torch

from attnzoo import create_attention


def test_parameter_free_global_is_sigmoid_of_the_mean():
    x = torch.randn(2, 8, 5, 7)
    ge = create_attention("ge_theta_minus", 8)
    torch.testing.assert_close(ge(x), x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True)))


def _reference_theta_minus(x, e, include_pad=False):
    """Float64 GE-theta- with extent e from its definition (GENet README figure GEPF8: average pooling over
    (2e-1) x (2e-1) windows with stride e, ceil(H/e) x ceil(W/e) outputs; window u centred on input e * u),
    then nearest-neighbour resizing to H x W and a sigmoid gate; written with explicit loops."""
    n, c, h, w = x.shape
    ho, wo = -(-h // e), -(-w // e)
    pooled = torch.empty(n, c, ho, wo, dtype=torch.float64)
    for i in range(ho):
        for j in range(wo):
            r0, r1 = max(0, e * i - (e - 1)), min(h, e * i + e)  # rows e*i - (e-1) .. e*i + (e-1), inside the map
            c0, c1 = max(0, e * j - (e - 1)), min(w, e * j + e)
            total = x[:, :, r0:r1, c0:c1].double().sum(dim=(2, 3))
            pooled[:, :, i, j] = total / ((2 * e - 1) ** 2 if include_pad else (r1 - r0) * (c1 - c0))
    rows = [r * ho // h for r in range(h)]  # nearest neighbour: source index floor(r * ho / h)
    cols = [q * wo // w for q in range(w)]
    gate = torch.sigmoid(pooled[:, :, rows][:, :, :, cols])
    return x.double() * gate


@pytest.mark.parametrize("extent", [2, 4, 8])
@pytest.mark.parametrize("size", [(6, 4), (9, 7), (16, 16), (13, 5)])
def test_parameter_free_extent_follows_the_definition(extent, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    ge = create_attention("ge_theta_minus", 3, extent=extent)
    torch.testing.assert_close(ge(x), _reference_theta_minus(x, extent))
    ge_pad = create_attention("ge_theta_minus", 3, extent=extent, count_include_pad=True)
    torch.testing.assert_close(ge_pad(x), _reference_theta_minus(x, extent, include_pad=True))


def test_parameter_free_extent_two_by_hand():
    # one row of 4 values, e = 2: windows of 3 centred on columns 0 and 2 -> means of (1, 2) and (2, 3, 4)
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    gate = create_attention("ge_theta_minus", 1, extent=2).weights(x)
    expected = torch.sigmoid(torch.tensor([1.5, 1.5, 3.0, 3.0]))
    torch.testing.assert_close(gate.flatten(), expected)


@pytest.mark.parametrize("size", [(7, 7), (14, 10), (3, 5)])
def test_uniform_global_kernel_is_an_average_at_any_size(size):
    ge = create_attention("ge_theta", 4, feat_size=7).eval()
    with torch.no_grad():
        ge.gather[0].weight.fill_(1 / 49)
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(ge.gathered(x).flatten(1), x.mean(dim=(2, 3)) / (1 + 1e-5) ** 0.5,
                               atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("ge_theta_minus", 8, extent=3)
    with pytest.raises(ValueError):
        create_attention("ge_theta_minus", 8, param_excite=True)


@pytest.mark.parametrize("name", ["ge_theta", "ge_theta_plus"])
def test_batchnorm_on_pooled_descriptor_needs_two_samples_in_training(name):
    m = create_attention(name, 8)
    assert m.min_train_batch == 2
    x = torch.randn(1, 8, 7, 7)
    with pytest.raises(ValueError, match="GatherExcite"):
        m.train()(x)
    assert m.eval()(x).shape == x.shape
    assert m.train()(torch.randn(2, 8, 7, 7)).shape == (2, 8, 7, 7)
    local = create_attention(name, 8, extent=4).train()  # a finite extent: BatchNorm sees a map of 2 x 2
    assert local.min_train_batch == 1 and local(torch.randn(1, 8, 7, 7)).shape == (1, 8, 7, 7)
    with pytest.raises(ValueError, match="GatherExcite"):
        local(torch.randn(1, 8, 4, 3))  # ... unless the map is no larger than e: one value per channel again
    assert create_attention("ge_theta_minus", 8).min_train_batch == 1
    create_attention("ge_theta_minus", 8).train()(x)
