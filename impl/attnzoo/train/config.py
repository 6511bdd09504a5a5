"""What one ``attnzoo train`` run is: its options, their checks and defaults, and the model it builds."""
from __future__ import annotations

import inspect
import json
import zlib
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from ..registry import create_model, get_entry, list_models, model_entry
from .errors import TrainError

OPTIMIZERS = ("auto", "sgd", "adamw")
# Options that change the result: a checkpoint is resumed only under the same values.
RESULT_KEYS = ("model", "attn", "conv", "model_kwargs", "data", "epochs", "batch_size", "lr", "opt", "momentum",
               "weight_decay", "warmup_epochs", "smoothing", "seed", "image_size", "amp")


@dataclass
class TrainConfig:
    """Options of ``attnzoo train`` (see ``attnzoo train --help``). ``batch_size`` is global: each of K DDP
    processes takes batch_size / K, so a run's recipe does not depend on how many devices ran it."""

    model: str
    attn: str | None = None
    conv: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    data: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    epochs: int = 200
    batch_size: int = 128
    lr: float | None = None            # default: 0.1 x B/128 (SGD), 5e-4 x B/512 (AdamW)
    opt: str = "auto"                  # auto: SGD for networks with BatchNorm, AdamW for the others
    momentum: float = 0.9
    weight_decay: float | None = None  # default: 5e-4 (SGD), 0.05 (AdamW)
    warmup_epochs: int = 0
    smoothing: float = 0.0
    seed: int = 0
    device: str | None = None          # default: cuda if available
    amp: bool = False
    compile: bool = False
    channels_last: bool | None = None  # default: on for CUDA
    deterministic: bool = False
    image_size: int | None = None      # default: the model's own (see default_image_size)
    workers: int = 4
    out: str = "results"
    resume: bool = False
    stop_after: int | None = None      # stop after this many epochs of this invocation (continue with resume)
    progress: bool = True

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            _positive(name, getattr(self, name))
        for name in ("image_size", "stop_after"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.opt not in OPTIMIZERS:
            raise TrainError(f"--opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}")
        if self.lr is not None and not self.lr > 0:
            raise TrainError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.smoothing < 1:
            raise TrainError(f"--smoothing must be in [0, 1), got {self.smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise TrainError(f"--warmup-epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not isinstance(self.model_kwargs, dict):
            raise TrainError(f"--model-kwargs must be a JSON object, got {self.model_kwargs!r}")

    def run_name(self, dataset: str) -> str:
        """``<dataset>-<model>[-<attn>][-<conv>]-e<epochs>-s<seed>`` (+ a hash of any other non-default recipe)."""
        parts = [dataset, self.model, self.attn, self.conv, f"e{self.epochs}", f"s{self.seed}"]
        recipe = {k: v for k, v in asdict(self).items() if k in RESULT_KEYS and k not in
                  ("model", "attn", "conv", "data", "epochs", "seed") and v != _DEFAULTS[k]}
        if recipe:
            parts.append(f"{zlib.crc32(json.dumps(recipe, sort_keys=True).encode()):08x}")
        return "-".join(p for p in parts if p).replace("/", "_")

    def result_options(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in RESULT_KEYS}


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TrainError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


_DEFAULTS = {k: v for k, v in asdict(TrainConfig("x")).items()}


def accepts(builder, key: str) -> bool:
    """Whether ``builder`` takes the keyword ``key`` (True when it takes **kwargs: we cannot tell)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return True
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


SLOTS = (("attn", "attn_layer", "attention"), ("conv", "conv_layer", "conv"))


def model_kwargs(cfg: TrainConfig, num_classes: int) -> dict:
    """The keyword arguments for ``create_model``; a TrainError for unknown names (with suggestions) and for a
    module kind the model has no place for."""
    try:
        entry = model_entry(cfg.model)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    kwargs = {**cfg.model_kwargs, "num_classes": num_classes}
    for attr, key, kind in SLOTS:
        name = getattr(cfg, attr)
        if name is None:
            continue
        try:
            get_entry(kind, name)
        except ValueError as exc:
            raise TrainError(f"--{attr} {name}: {exc}") from None
        if not accepts(entry.builder, key):
            hosts = sorted((m for m in list_models() if accepts(model_entry(m).builder, key)),
                           key=lambda m: (not m.endswith("_cifar"), m))
            raise TrainError(f"--{attr} {name}: model {cfg.model!r} has no place for a {kind} module (it takes no "
                             f"{key}=); models that do: {', '.join(hosts[:6])}{', ...' if len(hosts) > 6 else ''}")
        kwargs[key] = name
    return kwargs


def describe(cfg: TrainConfig) -> str:
    mods = [f"{kind} {getattr(cfg, attr)!r}" for attr, _, kind in SLOTS if getattr(cfg, attr)]
    return " and ".join(mods) if mods else "it"


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model with the requested modules; a TrainError when a module does not fit it."""
    kwargs = model_kwargs(cfg, num_classes)
    try:
        return create_model(cfg.model, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise TrainError(f"{describe(cfg)} does not fit model {cfg.model!r}: {exc}") from None


def measure_model(cfg: TrainConfig, num_classes: int, image_size: int) -> tuple[int, int]:
    """(parameters, MACs per image) on the meta device; also the check that the model runs at this size."""
    from ..nbtools import measure

    kwargs = model_kwargs(cfg, num_classes)
    try:
        return measure(lambda: create_model(cfg.model, **kwargs), (1, 3, image_size, image_size))
    except Exception as exc:  # noqa: BLE001  (any failure of the model with this module is the user's answer)
        what = f"{describe(cfg)} does not fit model {cfg.model!r}" if cfg.attn or cfg.conv else \
            f"model {cfg.model!r} does not run"
        raise TrainError(f"{what} at {image_size}x{image_size}: {type(exc).__name__}: {exc}") from None


def default_image_size(cfg: TrainConfig) -> int:
    """--image-size, else the size the model is built for: its ``img_size``, 32 for CIFAR-style models
    (``*_cifar``), else 224 (ImageNet's). CIFAR images are resized to it on the device."""
    if cfg.image_size:
        return cfg.image_size
    entry = model_entry(cfg.model)
    fixed = cfg.model_kwargs.get("img_size", entry.defaults.get("img_size"))
    if fixed is None:
        try:
            param = inspect.signature(entry.builder).parameters.get("img_size")
        except (TypeError, ValueError):
            param = None
        fixed = param.default if param is not None and param.default is not inspect.Parameter.empty else None
    if isinstance(fixed, (tuple, list)):
        fixed = fixed[0]
    if fixed:
        return int(fixed)
    return 32 if "cifar" in cfg.model else 224
