"""Small argument helpers shared by every module."""
from __future__ import annotations

import math
from typing import Any


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without dropping below ``round_limit`` of it."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


def to_2tuple(x: Any) -> tuple:
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair, got {x!r}")
        return tuple(x)
    return (x, x)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive int, else raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_ints(name: str, values) -> tuple[int, ...]:
    """A non-empty sequence of positive ints (rates, bins, pool sizes) as a tuple, else a ValueError naming it."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must hold at least one positive integer, got ()")
    return tuple(check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def check_repeats(name: str, values, rows: int) -> tuple[int, ...]:
    """Blocks per row (or stage) of an architecture table: ``rows`` positive integers, else a ValueError naming it."""
    values = check_positive_ints(name, values)
    if len(values) != rows:
        raise ValueError(f"{name} needs {rows} entries (one per row of the table), got {values!r}")
    return values


def heads_for_width(channels: int, num_heads: int | None, head_width: int, paper: str) -> int:
    """``num_heads`` checked, or (None) the heads of ``head_width`` channels each that ``paper`` uses by default."""
    if num_heads is None:
        if channels % head_width:
            raise ValueError(f"channels={channels} is not a multiple of {paper}'s head width {head_width}: "
                             f"pass num_heads")
        num_heads = channels // head_width
    check_positive_int("num_heads", num_heads)
    check_divisible("channels", channels, num_heads, "num_heads")
    return num_heads


def check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> None:
    if value % divisor:
        raise ValueError(f"{name}={value} must be divisible by {divisor_name}={divisor}")


def check_choice(name: str, value: Any, choices) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def reduced_channels(channels: int, rd_ratio: float | None = 1 / 16, rd_channels: int | None = None,
                     rd_divisor: int = 1, min_channels: int = 1) -> int:
    """Width of a bottleneck: ``rd_channels`` if given, else ``channels * rd_ratio`` rounded to ``rd_divisor``."""
    check_positive_int("channels", channels)
    if rd_channels is not None:
        return check_positive_int("rd_channels", rd_channels)
    if rd_ratio is None or not 0 < rd_ratio <= 1:
        raise ValueError(f"rd_ratio must be in (0, 1], got {rd_ratio!r}")
    raw = channels * rd_ratio
    if rd_divisor > 1:
        return make_divisible(raw, rd_divisor, round_limit=0.0)
    return max(min_channels, int(math.floor(raw + 1e-6)) or min_channels)


def check_train_batch(module, x) -> None:
    """For modules with a BatchNorm on a pooled (N, C, 1, 1) descriptor: a clear error at batch size 1 in training.

    BatchNorm cannot compute a variance over one value per channel; PyTorch's own error comes from deep inside.
    Such modules set ``min_train_batch = 2`` (the tests read it) and call this first in ``forward``.
    """
    if module.training and x.shape[0] < 2:
        raise ValueError(f"{type(module).__name__}: its BatchNorm on a pooled (N, C, 1, 1) descriptor needs a batch "
                         f"of at least 2 in training mode, got {x.shape[0]}; use a larger batch or call .eval()")


def check_images(owner: str, x, min_size: int = 1, why: str = "") -> None:
    """A clear ValueError naming ``owner`` unless ``x`` is an (N, C, H, W) batch of at least ``min_size`` pixels a side.

    ``why`` says what sets the minimum (a stem's stride, a window, ...); it ends the message in parentheses.
    """
    if x.dim() != 4:
        raise ValueError(f"{owner} expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{owner} needs images of at least {min_size}x{min_size} pixels{reason}, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")


def check_conv_args(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                    dilation: int = 1) -> None:
    """The arguments every conv-kind module shares: positive integers, and groups dividing both widths."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size),
                        ("stride", stride), ("groups", groups), ("dilation", dilation)):
        check_positive_int(name, value)
    check_divisible("in_channels", in_channels, groups, "groups")
    check_divisible("out_channels", out_channels, groups, "groups")


def check_stages(depths, dims, num_stages: int = 4) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Blocks and widths per stage of a hierarchical backbone: ``num_stages`` positive integers each."""
    depths, dims = tuple(depths), tuple(dims)
    if len(depths) != num_stages or len(dims) != num_stages:
        raise ValueError(f"depths and dims need {num_stages} entries (one per stage), got {depths!r} and {dims!r}")
    for i, (d, c) in enumerate(zip(depths, dims)):
        check_positive_int(f"depths[{i}]", d)
        check_positive_int(f"dims[{i}]", c)
    return depths, dims
