"""Helpers the mechanism notebooks share: device set-up, a sample image, counting, checks and plots."""
from __future__ import annotations

import functools
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cache import cached_macs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def setup(device: str = "cpu", seed: int = 0) -> torch.device:
    """Seed every generator and return the device; a clear error if CUDA is asked for but absent."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.device(device)


def sample_image(size: int | tuple[int, int] = 224, device: str | torch.device = "cpu") -> torch.Tensor:
    """A real photograph (Grace Hopper, shipped with matplotlib) as a normalized (1, 3, H, W) tensor."""
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = torch.from_numpy(mpimg.imread(f, format="jpg").copy()).float().div(255)
    img = img.permute(2, 0, 1).unsqueeze(0)
    size = (size, size) if isinstance(size, int) else tuple(size)
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((img - mean) / std).to(device)


def to_display(img: torch.Tensor):
    """Undo the normalization of ``sample_image`` for imshow: (1, 3, H, W) -> (H, W, 3) array in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=img.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=img.device).view(1, 3, 1, 1)
    return (img * std + mean).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _no_macs(*args, **kwargs) -> int:
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, *inputs, **kwargs) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2), the unit papers call FLOPs.

    torch's counter knows the CUDA kernels of scaled_dot_product_attention but not the CPU flash kernel;
    we register the same formula for it, so attention is counted on every device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    # The counter decomposes every op it has no formula for, to look for matmuls inside; batch norm has none, and
    # its decomposition into a dozen elementwise ops is most of the cost of counting a CNN (zero MACs either way).
    custom[torch.ops.aten.native_batch_norm.default] = _no_macs
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        model(*inputs, **kwargs)
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure(factory, input_shape: tuple[int, ...] | None = None) -> tuple[int, int | None]:
    """(parameters, MACs at ``input_shape``) of ``factory()``, built on the meta device (no memory, no compute).

    A model whose forward has no meta kernel for some op (e.g. complex FFTs) is measured on the CPU instead. MACs
    are remembered on disk per model, input shape and source version (``attnzoo.cache``): the tests and the
    paper's notebook count each reported variant once.
    """
    with torch.device("meta"):
        model = factory()
    params = count_params(model)
    if input_shape is None:
        return params, None
    def count() -> int:
        try:
            return count_macs(model, torch.zeros(input_shape, device="meta"))
        except (RuntimeError, NotImplementedError):
            return count_macs(factory(), torch.zeros(input_shape))

    return params, cached_macs(model, input_shape, count)  # counted once per model, shape and code version


def compare_with_reported(entry_id: str, model_factory, device: str | torch.device | None = None,
                          params_tol: float = 0.01, macs_tol: float = 0.10) -> list[dict]:
    """Count each reported variant of a catalogue entry and check it against the paper.

    ``model_factory(variant)`` builds the registered variant; it is called on the meta device (``measure``), so the
    largest variants cost neither memory nor compute, and ``device`` is not needed (accepted for older notebooks).
    Raises AssertionError when the parameter count is more than ``params_tol`` away (relative; the entry's
    ``params_rel_tol`` where it gives one) or the MACs more than ``macs_tol`` (or ``macs_rel_tol``).
    """
    from .catalogue import get_entry

    rows = []
    for rep in get_entry(entry_id).get("reported") or []:
        res = rep.get("resolution", 224)
        params, macs = measure(functools.partial(model_factory, rep["variant"]),
                               (1, 3, res, res) if rep.get("gflops") else None)
        params /= 1e6
        row = {"variant": rep["variant"], "params (M)": round(params, 3), "paper params (M)": rep["params_m"],
               "source": rep["source"]}
        if macs is not None:
            macs /= 1e9
            row.update({"GMACs": round(macs, 3), "paper GFLOPs": rep["gflops"]})
            assert abs(macs - rep["gflops"]) <= rep.get("macs_rel_tol", macs_tol) * rep["gflops"], row
        assert abs(params - rep["params_m"]) <= rep.get("params_rel_tol", params_tol) * rep["params_m"], row
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    """Print a list of dicts as an aligned text table."""
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(str(c).ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def print_timm_twins(models: list[str]) -> dict[str, str]:
    """Print (and return) which of ``models`` have a timm twin, i.e. load timm's weights with identical logits."""
    from .timm import list_timm_twins

    twins = list_timm_twins()
    rows = [{"model": m, "timm model": twins.get(m, "-"),
             "weights": "create_model(..., pretrained=True)" if m in twins else "none released in timm"}
            for m in models]
    print_table(rows)
    return {m: twins[m] for m in models if m in twins}


def check_backward(module: nn.Module, x: torch.Tensor, **kwargs) -> int:
    """Run forward + backward on a random-sized input; assert every used parameter gets a finite gradient.

    Returns the number of parameters that received a gradient.
    """
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = module(x, **kwargs)
    out.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "input gradient missing or not finite"
    with_grad = [p for p in module.parameters() if p.grad is not None]
    assert all(torch.isfinite(p.grad).all() for p in with_grad), "non-finite parameter gradient"
    return sum(p.numel() for p in with_grad)


def stage_shapes(model: nn.Module, x: torch.Tensor, names: list[str]) -> list[tuple[str, tuple]]:
    """Output shape of each named submodule during one forward pass, in call order."""
    shapes, hooks = [], []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(modules[name].register_forward_hook(
            lambda m, i, o, name=name: shapes.append((name, tuple(o[0].shape if isinstance(o, tuple) else o.shape)))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def plot_stage_shapes(shapes: list[tuple[str, tuple]], title: str = ""):
    """Bar diagram of channels (height) and spatial size (label) per stage; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(shapes), 3.2))
    chans = [s[1] if len(s) > 1 else 0 for _, s in shapes]
    ax.bar(range(len(shapes)), chans, color="#4C72B0")
    for i, (_, s) in enumerate(shapes):
        ax.text(i, chans[i], "x".join(map(str, s[2:])) or "-", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(shapes)), [n for n, _ in shapes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("channels")
    ax.set_title(title or "output of each stage (label: spatial size)")
    fig.tight_layout()
    return fig


def plot_maps(image: torch.Tensor, maps: list[torch.Tensor], titles: list[str], suptitle: str = ""):
    """The image next to spatial maps (each (H', W'), upsampled and overlaid); returns the figure."""
    import matplotlib.pyplot as plt

    rgb = to_display(image)
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3 * (len(maps) + 1), 3.2))
    axes[0].imshow(rgb)
    axes[0].set_title("input")
    for ax, m, t in zip(axes[1:], maps, titles):
        m = F.interpolate(m.detach().float().cpu()[None, None], size=rgb.shape[:2], mode="bilinear")[0, 0]
        ax.imshow(rgb)
        ax.imshow(m.numpy(), cmap="jet", alpha=0.5)
        ax.set_title(t)
    for ax in axes:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
