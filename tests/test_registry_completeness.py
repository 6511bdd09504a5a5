"""Nothing vanishes from the registry: every paper file imports and registers, every catalogue name exists."""
import importlib
import pkgutil

import pytest

from attnzoo import registry
from attnzoo.catalogue import IMPLEMENTATION_KINDS, load_catalogue
from attnzoo.paths import project_root

ENTRIES, _ = load_catalogue(project_root())


def _paper_files() -> list[str]:
    names = []
    for folder in registry.PACKAGES.values():
        package = importlib.import_module(f"attnzoo.{folder}")
        names += [f"attnzoo.{folder}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_")]
    return sorted(names)


def _registered() -> dict[str, set[str]]:
    return {kind: set(registry.list_names(kind)) for kind in registry.KINDS}


def test_every_paper_file_imports():
    assert registry.load_errors() == [], "\n".join(map(str, registry.load_errors()))


@pytest.mark.parametrize("module", _paper_files())
def test_every_paper_file_registers_a_name(module):
    registered_by = {registry.get_entry(kind, name).module for kind, names in _registered().items() for name in names}
    assert module in registered_by, f"{module} registers nothing: a paper's file calls a register_* function"


@pytest.mark.parametrize("entry_id", sorted(i for i, e in ENTRIES.items() if any(e.registry_names.values())))
def test_every_catalogued_name_is_registered_in_its_kind(entry_id):
    registered = _registered()
    for key, names in ENTRIES[entry_id].registry_names.items():
        missing = [n for n in names if n not in registered[IMPLEMENTATION_KINDS[key]]]
        assert not missing, f"catalogue/{entry_id}.yaml lists unregistered {key} names {missing}"


def test_every_registered_name_is_claimed_by_one_catalogue_entry():
    claimed = [(IMPLEMENTATION_KINDS[key], n) for e in ENTRIES.values() for key, names in e.registry_names.items()
               for n in names]
    assert len(claimed) == len(set(claimed)), "a name is claimed by two entries"
    unclaimed = [(kind, n) for kind, names in _registered().items() for n in sorted(names) if (kind, n) not in claimed]
    assert not unclaimed, f"registered but in no catalogue entry's implementation: {unclaimed}"

