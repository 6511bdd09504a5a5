"""Weight compatibility with timm: load timm's tensors into our models by explicit per-architecture rules.

Where timm implements the same architecture as one of our models, the model's registration names its twin
(``register_model("resnet50", ..., timm="resnet50")``) and the architecture's file declares how timm's
state-dict keys map onto ours with ``register_timm_rules(ModelClass, renames=..., convert=...)``:

* ``renames``: (regex, replacement) pairs applied in order to every timm key (``re.sub``, all that match), or
  a function of the model returning them (when the keys depend on the model's configuration);
* ``convert``: an optional function on the renamed state dict for what renames cannot say (a permuted
  position-embedding layout, a fused projection split in two, ...).

``load_timm_weights`` then checks that the mapping is one to one (every timm tensor used, every tensor of ours
filled) and that every shape matches, and raises ``TimmWeightsError`` naming the first unmatched key on each side
otherwise. The only layout change it makes on its own is between a linear layer's (out, in) weight and a 1x1
convolution's (out, in, 1, 1) one, which hold the same numbers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn as nn

from . import registry


class TimmWeightsError(ValueError):
    """timm's state dict does not map one to one onto the model."""


@dataclass(frozen=True)
class TimmRules:
    renames: tuple[tuple[str, str | Callable[[re.Match], str]], ...] = ()
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None

    def rename(self, key: str) -> str:
        for pattern, repl in self.renames:
            key = re.sub(pattern, repl, key)
        return key

    def apply(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            new = self.rename(key)
            if new in out:
                raise TimmWeightsError(f"two timm tensors map to {new!r} (the second is {key!r}): the rules are wrong")
            out[new] = value
        return self.convert(out) if self.convert else out


_RULES: dict[type, tuple] = {}


def register_timm_rules(model_cls: type, renames=(), convert=None) -> None:
    """Declare how timm's keys map onto ``model_cls``'s (and its subclasses') state dict."""
    if model_cls in _RULES:
        raise ValueError(f"timm rules for {model_cls.__name__} are already registered")
    _RULES[model_cls] = (renames, convert)


def timm_rules(model: nn.Module) -> TimmRules:
    """The rules for ``model`` (looked up along its class hierarchy)."""
    for cls in type(model).__mro__:
        if cls in _RULES:
            renames, convert = _RULES[cls]
            return TimmRules(tuple(renames(model) if callable(renames) else renames), convert)
    raise TimmWeightsError(f"no timm rules for {type(model).__name__}: it has no timm twin "
                           f"(models with one: {', '.join(list_timm_twins()) or 'none'})")


def timm_name(name: str) -> str | None:
    """The timm model with the same architecture as our registered model ``name`` (None if there is none)."""
    return registry.model_entry(name).timm


def list_timm_twins(pattern: str = "*") -> dict[str, str]:
    """Our model name -> timm model name, for every registered model with a timm twin."""
    return {n: registry.model_entry(n).timm for n in registry.list_models(pattern) if registry.model_entry(n).timm}


def _fit(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``value`` in ``shape`` if equal, or if only trailing singleton dims differ (linear <-> 1x1 conv)."""
    if value.shape == shape:
        return value
    squeeze = lambda s: tuple(s[:2]) if len(s) > 2 and all(d == 1 for d in s[2:]) else tuple(s)  # noqa: E731
    if squeeze(value.shape) == squeeze(shape):
        return value.reshape(shape)
    return None


def load_timm_weights(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy the weights of a timm model (or its ``state_dict()``) into ``model``; returns ``model``.

    Raises ``TimmWeightsError`` (a ValueError) if any tensor is left over on either side or a shape differs.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    rules = timm_rules(model)
    mapped = rules.apply(state)
    ours = model.state_dict()
    missing = [k for k in ours if k not in mapped]
    unused = [k for k in mapped if k not in ours]
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of our tensors got no timm tensor (first: {missing[0]!r})")
        if unused:
            origin = {rules.rename(k): k for k in state}.get(unused[0], unused[0])
            parts.append(f"{len(unused)} timm tensors were not used (first: {origin!r}, mapped to {unused[0]!r})")
        raise TimmWeightsError(f"{type(model).__name__}: " + "; ".join(parts))
    fitted = {}
    for key, target in ours.items():
        value = _fit(mapped[key], target.shape)
        if value is None:
            raise TimmWeightsError(f"{type(model).__name__}: shape mismatch at {key!r}: ours {tuple(target.shape)}, "
                                   f"timm {tuple(mapped[key].shape)}")
        fitted[key] = value.to(dtype=target.dtype)
    model.load_state_dict(fitted, strict=True)
    return model


def load_pretrained(model: nn.Module, name: str, **timm_kwargs) -> nn.Module:
    """Load the released weights of ``name``'s timm twin through timm's own loader, or fail clearly."""
    twin = timm_name(name)
    if twin is None:
        raise ValueError(f"model {name!r} has no timm twin, so there are no released weights to load; "
                         f"models with pretrained weights: {', '.join(list_timm_twins())}")
    try:
        import timm
    except ImportError:
        raise RuntimeError(f"pretrained=True loads {twin!r} through timm, which is not installed: "
                           f"pip install timm") from None
    try:
        source = timm.create_model(twin, pretrained=True, **timm_kwargs)
    except Exception as exc:  # noqa: BLE001  (network, missing weights, ...)
        raise RuntimeError(f"could not load timm's pretrained weights for {twin!r} (needed by {name!r}): "
                           f"{type(exc).__name__}: {exc}") from exc
    return load_timm_weights(model, source)
