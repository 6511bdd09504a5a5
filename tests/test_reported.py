"""Parameter counts (and MACs) of every variant a catalogue entry reports, against the paper's figures."""
import pytest
import torch

from attnzoo import create_attention, create_model, list_models
from attnzoo.catalogue import load_catalogue
from attnzoo.nbtools import count_macs, count_params

ENTRIES, _ = load_catalogue()
CASES = [pytest.param(e.id, rep, id=f"{e.id}:{rep['variant']}")
         for e in ENTRIES.values() if e.get("status") == "implemented" for rep in e.get("reported") or []]


def _build(variant: str, rep: dict):
    if variant in list_models():
        return create_model(variant, num_classes=rep.get("num_classes", 1000))
    return create_attention(variant, rep["channels"])


@pytest.mark.parametrize("entry_id,rep", CASES)
def test_params_match_paper(entry_id, rep):
    model = _build(rep["variant"], rep)
    params_m = count_params(model) / 1e6
    assert params_m == pytest.approx(rep["params_m"], rel=0.01), f"{entry_id}: {rep['variant']} ({rep['source']})"


@pytest.mark.parametrize("entry_id,rep", [c for c in CASES if c.values[1].get("gflops")])
def test_macs_match_paper(entry_id, rep):
    model = _build(rep["variant"], rep)
    res = rep.get("resolution", 224)
    gmacs = count_macs(model, torch.zeros(1, 3, res, res)) / 1e9
    # Papers differ in what they count (some omit the head, BN, or pooling): 10 % tolerance, or a wider one
    # that the entry justifies in its note.
    tol = rep.get("macs_rel_tol", 0.10)
    assert gmacs == pytest.approx(rep["gflops"], rel=tol), f"{entry_id}: {rep['variant']} ({rep['source']})"


def test_there_are_reported_figures():
    assert len(CASES) >= 3
