"""Every registered model with a timm twin loads timm's weights and gives timm's logits (random weights,
randomised BatchNorm statistics, eval mode) at its default size and at a second size both compute the same way."""
import functools

import pytest
import torch
import torch.nn as nn

from attnzoo import create_model, load_timm_weights
from attnzoo.timm import TimmWeightsError, list_timm_twins

timm = pytest.importorskip("timm", reason="timm is part of the test extra: pip install -e '.[test]'")

TWINS = list_timm_twins()
# The second size: odd and non-square where the architecture allows any size, else another multiple of its stride.
# Where ours departs from timm by design, a size where the departure does not act: MobileViT's maps must be even at
# strides 8-32 (we pad and mask odd ones, timm and the authors resize them); ViT's 14 x 14 patch grid needs no
# resampling of the position embeddings (we resample bicubically without antialiasing, timm with); timm's VOLO
# never resamples them, so both VOLOs are built for the second size.
OTHER_SIZE = {"volo_d1": (256, 256), "vit_": (217, 209)}
# Keyword arguments for the pair at the second size where the defaults cannot run it: "timm" for timm's model only
# (timm's ViT takes other sizes only when asked, then zero-pads to whole patches as ours does), "both" for ours and
# timm's (VOLO's position embedding is laid out for one input size in timm).
OTHER_SIZE_KWARGS = {"vit_": {"timm": dict(dynamic_img_size=True, dynamic_img_pad=True)},
                     "volo_d1": {"both": dict(img_size=256)}}
# Swin: a size needing no window padding at any stage (timm pads after the cyclic shift, we before it as the
# authors' detection code does), for which timm's masks must be built at construction. DeiT: as ViT.
OTHER_SIZE.update({"swin_": (224, 448), "deit_": (217, 209)})
OTHER_SIZE_KWARGS.update({"swin_": {"timm": dict(img_size=(224, 448))},
                          "deit_": {"timm": dict(dynamic_img_size=True, dynamic_img_pad=True)}})
# Arguments of ours in every pair where timm departs from the authors' code and ours follows the authors by default:
# timm's PoolFormer normalises the pooled vector (LayerNorm), the authors' code the last map (one-group GroupNorm).
OURS_KWARGS = {"poolformer_": dict(head_norm="pooled"), "mixer_": dict(gelu="exact")}
# MLP-Mixer: the authors' GELU is JAX's tanh approximation, timm's the exact one; timm's token-mixing MLPs are built
# for one input size, so both are built for the second.
OTHER_SIZE["mixer_"] = (256, 192)
OTHER_SIZE_KWARGS["mixer_"] = {"both": dict(img_size=(256, 192))}
# gMLP: the spatial gating units are built for one patch grid, in timm and here.
OTHER_SIZE["gmlp_"] = (256, 192)
OTHER_SIZE_KWARGS["gmlp_"] = {"both": dict(img_size=(256, 192))}
# CaiT: timm's position table is laid out for one input size (ours resizes it), so both are built for the second.
OTHER_SIZE["cait_"] = (256, 192)
OTHER_SIZE_KWARGS["cait_"] = {"both": dict(img_size=(256, 192))}
# PiT: likewise (timm's position map is built for one size; ours is resized bicubically for others).
OTHER_SIZE["pit_"] = (256, 192)
OTHER_SIZE_KWARGS["pit_"] = {"both": dict(img_size=(256, 192))}
# ConViT: likewise, and square (timm's GPSA builds its offsets for a sqrt(L) x sqrt(L) grid).
OTHER_SIZE["convit_"] = (256, 256)
OTHER_SIZE_KWARGS["convit_"] = {"both": dict(img_size=256)}
# EfficientFormer: timm's attention bias is built for a 7 x 7 last grid; 211 x 197 is odd and still gives 7 x 7.
OTHER_SIZE["efficientformer_"] = (211, 197)
# LeViT: timm's bias tables and token reshapes are fixed to img_size // 16 (ours reads the grid from the tensor and
# clamps offsets beyond the table), so both are built for a second size that is a multiple of 16.
OTHER_SIZE["levit_"] = (256, 192)
OTHER_SIZE_KWARGS["levit_"] = {"both": dict(img_size=(256, 192))}
# CoaT: timm's patch embeddings check the input against img_size, so timm's model is built for the second size.
OTHER_SIZE_KWARGS["coat_"] = {"timm": dict(img_size=(161, 129))}
# MaxViT: the window is img_size // 32 in timm and here, and timm refuses maps that are not multiples of it (we pad and
# mask), so both are built for a second size whose maps are multiples of its window at every stage.
OTHER_SIZE["maxvit_"] = (192, 256)
OTHER_SIZE_KWARGS["maxvit_"] = {"both": dict(img_size=(192, 256))}


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Every parameter from a cheap deterministic hash (fan-in scaled weights, biases near 0, other vectors near 1),
    BatchNorm statistics random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            p.copy_(_hash_uniform(p.numel(), seed + i).view(p.shape))
            if p.dim() >= 2:
                p.mul_((3 * p.shape[0] / p.numel()) ** 0.5)
            else:
                p.mul_(0.1).add_(0.0 if name.endswith("bias") else 1.0)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


_PERIOD = 65537  # prime: tensors (and rows) starting at different offsets never line up with each other


def _hash_uniform(n: int, seed: int) -> torch.Tensor:
    """n numbers spread over (-1, 1): one fixed pseudo-random block of prime length, rotated by ``seed`` and tiled.
    Cheap for 300 M parameters (a copy, no arithmetic per element), and no two tensors or rows of a weight share
    their values at the same positions, so any mix-up in the weight mapping changes the logits."""
    start = seed % _PERIOD
    if n + start <= 2 * _PERIOD:  # most tensors: a slice of the block, written out twice once per run
        return _hash_block()[start:start + n]
    return _hash_block()[:_PERIOD].repeat(-(-(n + start) // _PERIOD))[start:start + n]


@functools.cache
def _hash_block() -> torch.Tensor:
    i = torch.arange(_PERIOD, dtype=torch.float64)
    block = (torch.remainder(torch.sin(i * 12.9898 + 78.233) * 43758.5453, 1.0) * 2 - 1).float()
    return block.repeat(2)


def _by_prefix(table: dict, name: str, default):
    return next((v for k, v in table.items() if name.startswith(k)), default)


def _other_size(name: str, smallest: bool = True) -> tuple[int, int]:
    """The second size of ``name``: its own (OTHER_SIZE, or the one its OTHER_SIZE_KWARGS build for), else odd and
    non-square: 161 x 129 for the smallest twin of a family, 97 x 67 for the larger ones (the same code, where
    the test checks the mapping of their weights: a smaller image checks it as well, at a third of the cost)."""
    if _by_prefix(OTHER_SIZE, name, None) is None and _by_prefix(OTHER_SIZE_KWARGS, name, None) is None:
        return (161, 129) if smallest else (97, 67)
    return _by_prefix(OTHER_SIZE, name, (161, 129))


def _pair(name: str, fills_skipped, timm_kwargs: dict | None = None, both_kwargs: dict | None = None,
          ours_kwargs: dict | None = None):
    """timm's model (built without random fills, then ``_randomise``d) and ours with its weights, both in eval.
    ``fills_skipped``: the ``random_fills_skipped`` fixture (drawing 300 M numbers costs more than a forward)."""
    with fills_skipped():
        theirs = timm.create_model(TWINS[name], **(timm_kwargs or {}), **(both_kwargs or {})).eval()
    _randomise(theirs)
    ours = _uninitialised(name, **_by_prefix(OURS_KWARGS, name, {}), **(both_kwargs or {}), **(ours_kwargs or {}))
    return theirs, load_timm_weights(ours, theirs)


# Families whose timm variants let the stage depths be overridden, with timm's names for the depth arguments our
# ``shallow`` fixture gives where they differ. Their larger twins are compared at two blocks per stage on both sides
# (the variant's widths, heads and layout at a fraction of the cost), after their full-depth weights are mapped on
# the meta device (every tensor of timm's variant finds its place and shape in ours, without memory or compute).
SHALLOW_TWINS = {"vit_": {}, "deit_": {}, "xcit_": {}, "cait_": {}, "convit_": {}, "swin_": {}, "convnext_": {},
                 "pit_": {}, "densenet": {}, "resnet": {}, "res2net": {}, "wide_resnet": {}, "se_resnet": {},
                 "levit_": {"depths": "depth"}, "coat_lite": {"depths": "serial_depths"}}


# Families whose timm variants cannot be given other depths (their registrations fix them): the larger twins load
# their full-depth weights, then every container of blocks (a ``*blocks`` Sequential or ModuleList, at the same path
# on both sides) is cut to its first two blocks on both sides before the logits are compared, as SHALLOW_TWINS does
# through the depths. Not EfficientFormer: its last stage ends in blocks of another kind.
CUT_TWINS = ("maxvit_", "mixer_", "gmlp_", "mit_", "convmixer_", "sequencer2d_", "poolformer_", "coat_")


def _cut_to_two_blocks(theirs: nn.Module, ours: nn.Module) -> None:
    cut = {}
    for side, model in (("theirs", theirs), ("ours", ours)):
        cut[side] = [name for name, m in model.named_modules() if name.rsplit(".", 1)[-1].endswith("blocks")
                     and isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > 2]
        for name in cut[side]:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, model.get_submodule(name)[:2])
    assert cut["theirs"] == cut["ours"] and cut["ours"], cut


def _maps_at_full_depth(name: str, kwargs: dict) -> None:
    with torch.device("meta"):
        theirs = timm.create_model(TWINS[name], **kwargs.get("timm", {}), **kwargs.get("both", {}))
        ours = create_model(name, **_by_prefix(OURS_KWARGS, name, {}), **kwargs.get("both", {}))
    load_timm_weights(ours, theirs)


def _uninitialised(name: str, **kwargs) -> nn.Module:
    """Our model with allocated but uninitialised tensors (built on the meta device: initialising weights that
    timm's then overwrite is most of the cost of the large variants). Every tensor must come from the state dict."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    assert set(dict(model.named_buffers())) <= set(model.state_dict()), "a non-persistent buffer would stay empty"
    return model.to_empty(device="cpu").eval()


def test_there_are_twins():
    assert {"resnet50", "se_resnet50", "sknet50", "vit_base_patch16_224", "volo_d1", "mobilevit_s",
            "mobilevitv2_100", "mobilenetv2_100"} <= set(TWINS)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_timm_weights_give_timm_logits(name, family_smallest, shallow, random_fills_skipped):
    """Every twin at the second size; the smallest twin of each family (variants that only scale one architecture)
    at its default size too. The larger variants run the same code: what the test adds for them is the mapping of
    their weights, which the second size checks as well as the default one, at a fraction of the cost (see
    ``_other_size``), and at two blocks per stage where timm lets the depths be set (``SHALLOW_TWINS``) or once both
    models are cut to them after loading (``CUT_TWINS``)."""
    default = tuple(timm.models.get_pretrained_cfg_value(TWINS[name], "input_size") or (3, 224, 224))[1:]
    kwargs = _by_prefix(OTHER_SIZE_KWARGS, name, {})
    smallest = family_smallest(name, TWINS) == name
    other = _other_size(name, smallest)
    renames = None if smallest else _by_prefix(SHALLOW_TWINS, name, None)
    if renames is not None:  # a larger twin whose depths timm lets us set: full-depth mapping, shallow logits
        _maps_at_full_depth(name, kwargs)
        depths = shallow(name, blocks=2)
        timm_kwargs = {**kwargs.get("timm", {}), **{renames.get(k, k): v for k, v in depths.items()}}
        cases = [(other, _pair(name, random_fills_skipped, timm_kwargs, kwargs.get("both"), depths))]
    else:
        at_other = _pair(name, random_fills_skipped, kwargs.get("timm"), kwargs.get("both"))
        if not smallest and name.startswith(CUT_TWINS):
            _cut_to_two_blocks(*at_other)
        cases = [(default, _pair(name, random_fills_skipped) if kwargs else at_other)] if smallest else []
        cases.append((other, at_other))
    for size, (theirs, ours) in cases:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected, got = theirs(x), ours(x)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale.item(), msg=f"{name} at {size}")


def test_the_fill_makes_a_swapped_tensor_change_the_logits(random_fills_skipped):
    """The parity test's guard: two same-shape weights exchanged, or one transposed, must not give timm's logits."""
    theirs, ours = _pair("resnet18", random_fills_skipped)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected)
        a, b = ours.stages[0][0].conv1[0].weight, ours.stages[0][0].conv2[0].weight
        a0, b0 = a.clone(), b.clone()
        a.copy_(b0)
        b.copy_(a0)
        assert not torch.allclose(ours(x), expected, rtol=0, atol=1e-3), "swapped weights gave timm's logits"
        a.copy_(a0.transpose(0, 1))
        b.copy_(b0)
        assert not torch.allclose(ours(x), expected, rtol=0, atol=1e-3), "a transposed weight gave timm's logits"


def test_mismatch_names_the_first_unmatched_key_on_each_side():
    theirs = timm.create_model("resnet18").state_dict()
    theirs["layer1.0.extra.weight"] = torch.zeros(3)
    del theirs["fc.bias"]
    with pytest.raises(TimmWeightsError, match=r"head\.bias.*'layer1\.0\.extra\.weight'"):
        load_timm_weights(create_model("resnet18"), theirs)


def test_shape_mismatch_is_an_error():
    with pytest.raises(TimmWeightsError, match="shape mismatch at 'head.weight'"):
        load_timm_weights(create_model("resnet18", num_classes=10), timm.create_model("resnet18"))


def test_model_without_twin_is_refused():
    with pytest.raises(TimmWeightsError, match="no timm rules"):
        load_timm_weights(create_model("gfnet_ti"), timm.create_model("resnet18"))


def test_pretrained_fails_clearly_without_network(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="could not load timm's pretrained weights for 'resnet50'"):
        create_model("resnet50", pretrained=True)
    with pytest.raises(ValueError, match="has no timm twin"):
        create_model("gfnet_ti", pretrained=True)


def test_every_paper_with_a_twin_shows_it_on_its_book_page():
    """The correspondence is data (``timm=`` on the registration); each paper's notebook prints it."""
    import nbformat

    from attnzoo.catalogue import load_catalogue
    from attnzoo.paths import project_root

    entries, _ = load_catalogue()
    missing = []
    for e in entries.values():
        models = (e.get("implementation") or {}).get("models", [])
        if e.get("notebook") and any(m in TWINS for m in models):
            nb = nbformat.read(project_root() / e.notebook, as_version=4)
            if not any("print_timm_twins" in c.source for c in nb.cells if c.cell_type == "code"):
                missing.append(e.notebook)
    assert not missing, f"add a 'Weights from timm' cell (nbtools.print_timm_twins) to {missing}"
