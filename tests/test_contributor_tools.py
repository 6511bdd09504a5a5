"""The contributor path: `attnzoo new` for new and catalogued papers, and what `attnzoo check` rejects (scaffold
placeholders, unclean notebooks, missing {cite} keys, broken modules) with the file and line, changing nothing."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from attnzoo.catalogue import read_entry
from attnzoo.paths import project_root
from attnzoo.placeholders import PLACEHOLDER
from attnzoo.scaffold import TEMPLATES

ROOT = project_root()


def line_of(path, text):
    """1-based number of the first line of ``path`` containing ``text``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def add_entry_lines(project, entry_id, lines):
    """Apply the lines `attnzoo new` printed for a catalogued entry (they replace its status line)."""
    path = project / "catalogue" / f"{entry_id}.yaml"
    text = re.sub(r"^status: \w+\n", lambda _: lines, path.read_text(), flags=re.M)
    path.write_text(text)
    return path


# ---- attnzoo new --------------------------------------------------------------------------------------------

@pytest.fixture
def project(project, monkeypatch):
    """The metadata copy with ULSAM, the example paper of these tests, as a catalogued entry whatever its status in
    the real catalogue (its notebook and the lines an implementation adds removed, its names unregistered here)."""
    from attnzoo import registry

    registry.list_names("attention")  # loads the registry before its table is patched
    for kind, table in registry._TABLES.items():
        for name, entry in list(table.items()):
            if entry.module.endswith(".ulsam"):
                monkeypatch.delitem(table, name)
    entry = project / "catalogue" / "ulsam.yaml"
    entry.write_text(re.sub(r"^status: \w+\n", "status: catalogued\n", drop_keys(entry.read_text(), IMPLEMENTED),
                            flags=re.M))
    (project / "book" / "notebooks" / "ulsam.ipynb").unlink(missing_ok=True)
    return project


IMPLEMENTED = ("implementation", "notebook", "reported")


def drop_keys(text, keys):
    """YAML text without the top-level ``keys`` (each with its indented or list continuation lines)."""
    out, dropping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "-", "\n", ""):
            dropping = line.split(":")[0] in keys
        if not dropping:
            out.append(line)
    return "".join(out)


def test_new_on_a_catalogued_entry_writes_module_notebook_and_test_only(project, capsys, run, snapshot):
    before = snapshot(project)
    assert run(project, "new", "ulsam") == 0
    out = capsys.readouterr().out
    after = snapshot(project)
    assert set(after) - set(before) == {"impl/attnzoo/attention/ulsam.py", "book/notebooks/ulsam.ipynb",
                                        "tests/attention/test_ulsam.py"}
    assert all(after[f] == before[f] for f in before)

    title = "ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks"
    module = after["impl/attnzoo/attention/ulsam.py"].decode()
    citation = f'"""{title} (Saini et al., WACV 2020, https://arxiv.org/abs/2006.15102).'
    assert " ".join(module.split()).startswith(citation)
    assert '@register_attention("ulsam")' in module
    nb = json.loads(after["book/notebooks/ulsam.ipynb"])
    assert nb["cells"][0]["source"][0] == "# ULSAM\n"
    assert f"{title} {{cite}}`saini2020ulsam` (WACV 2020)" in "".join(nb["cells"][0]["source"])
    assert 'create_attention("ulsam", channels)' in "".join(c for cell in nb["cells"] for c in cell["source"])
    assert 'create_attention("ulsam", 8)' in after["tests/attention/test_ulsam.py"].decode()

    lines = out.split("in place of its `status:` line:\n\n")[1].split("\n\n")[0]
    assert [line.strip() for line in lines.splitlines()] == [
        "status: implemented", "implementation:", "attention: [ulsam]", "notebook: book/notebooks/ulsam.ipynb"]
    entry_path = add_entry_lines(project, "ulsam", "\n".join(line[4:] for line in lines.splitlines()) + "\n")
    entry, problems = read_entry(entry_path, project)
    assert problems == [] and entry.registry_names["attention"] == ["ulsam"]


@pytest.mark.parametrize("kind,folder,register", [("attention", "attention", "@register_attention("),
                                                  ("conv", "convs", "@register_conv("),
                                                  ("block", "blocks", "@register_block("),
                                                  ("model", "models", "register_model(")])
def test_new_kind_and_name_choose_the_folders_and_the_templates_are_valid_python(
        project, capsys, run, kind, folder, register):
    assert run(project, "new", "ulsam", "--kind", kind, "--name", "ulsam_x") == 0
    key = {"attention": "attention", "conv": "conv", "block": "blocks", "model": "models"}[kind]
    assert f"{key}: [ulsam_x]" in capsys.readouterr().out
    module = project / "impl" / "attnzoo" / folder / "ulsam_x.py"
    test = project / "tests" / folder / "test_ulsam_x.py"
    assert f'{register}"ulsam_x"' in module.read_text()
    compile(module.read_text(), str(module), "exec")
    compile(test.read_text(), str(test), "exec")
    nb = json.loads((project / "book" / "notebooks" / "ulsam.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        compile("".join(cell["source"]), "cell", "exec")
    params = [c for c in code if c["metadata"].get("tags") == ["parameters"]]
    assert len(params) == 1 and all(f"{p} =" in "".join(params[0]["source"])
                                    for p in ("device", "batch_size", "image_size", "seed"))


def test_new_refuses_an_implemented_entry_naming_its_files(project, capsys, run, snapshot):
    before = snapshot(project)
    assert run(project, "new", "senet") == 1
    err = capsys.readouterr().err
    assert "catalogue/senet.yaml:15: status: 'senet' is already implemented (attention: se; models: se_resnet50)" in err
    assert snapshot(project) == before


def test_new_refuses_to_scaffold_from_an_invalid_entry(project, capsys, run, snapshot, edit_entry):
    entry = edit_entry(project, "ulsam", venue="WACV20")
    before = snapshot(project)
    assert run(project, "new", "ulsam") == 1
    err = capsys.readouterr().err
    assert f"catalogue/ulsam.yaml:{line_of(entry, 'venue:')}: venue: 'WACV20' is not one of the allowed values" in err
    assert "nothing was written" in err
    assert snapshot(project) == before


def test_new_refuses_when_any_target_exists_and_writes_nothing(project, capsys, run, snapshot):
    existing = project / "tests" / "attention" / "test_ulsam.py"
    existing.parent.mkdir(parents=True)
    existing.write_text("# mine\n")
    before = snapshot(project)
    assert run(project, "new", "ulsam") == 1
    assert "tests/attention/test_ulsam.py: already exists; refusing to overwrite" in capsys.readouterr().err
    assert snapshot(project) == before


def test_new_refuses_a_taken_registry_name_and_a_bad_kind(project, capsys, run, snapshot):
    before = snapshot(project)
    assert run(project, "new", "squeeze-again", "--name", "se") == 1
    assert "impl/attnzoo/attention/se.py: name: 'se' is already a registered attention name" in capsys.readouterr().err
    assert run(project, "new", "ulsam", "--kind", "atention") == 1
    assert "--kind 'atention' is not one of attention, conv, block, model; did you mean attention?" in \
        capsys.readouterr().err
    assert run(project, "new", "ulsam", "--name", "Ulsam-Net") == 1
    assert snapshot(project) == before


def test_catalogue_only_scaffold_is_rejected_by_check_and_readme_until_filled(project, capsys, run, snapshot):
    assert run(project, "new", "my-net", "--catalogue-only") == 0
    entry = project / "catalogue" / "my-net.yaml"
    data = yaml.safe_load(entry.read_text())
    assert data["status"] == "catalogued" and "implementation" not in data and "notebook" not in data
    assert not (project / "impl").exists() and not (project / "book" / "notebooks" / "my-net.ipynb").exists()
    capsys.readouterr()
    before = snapshot(project)
    assert run(project, "check") == 1
    assert run(project, "readme") == 1
    err = capsys.readouterr().err
    for field in ("title", "venue", "year", "category", "main_idea", "bibkey"):
        line = line_of(entry, field + ":")
        assert f"catalogue/my-net.yaml:{line}: {field}: placeholder left from `attnzoo new`" in err
    assert f"catalogue/my-net.yaml:{line_of(entry, 'paper:')}: links.paper: placeholder" in err
    assert f"catalogue/my-net.yaml:{line_of(entry, 'tags:')}: tags.0: placeholder" in err
    assert "is not one of" not in err  # placeholders are reported once, not as schema errors too
    bib_line = line_of(project / "references.bib", "@article{TODO-my-net,")
    assert f"references.bib:{bib_line}: key: placeholder left from `attnzoo new` in the key 'TODO-my-net'" in err
    assert f"references.bib:{bib_line}: author: entry 'TODO-my-net': placeholder" in err
    assert "README.md not changed" in err
    assert snapshot(project) == before


def test_every_template_marks_the_gaps_and_ships_with_the_package():
    templates = {p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*") if p.is_file()}
    for kind in ("attention", "conv", "block", "model"):
        assert {f"{kind}/module.py.tmpl", f"{kind}/test.py.tmpl", f"{kind}/notebook.ipynb.tmpl"} <= templates
    for name in templates - {"README.md", "implemented.yaml.tmpl"}:
        assert PLACEHOLDER in (TEMPLATES / name).read_text(), name
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["attnzoo"]
    package = TEMPLATES.parent
    shipped = {p.relative_to(TEMPLATES).as_posix() for pattern in patterns for p in package.glob(pattern)
               if p.is_file() and p.is_relative_to(TEMPLATES)}
    assert shipped == templates


# ---- notebooks ----------------------------------------------------------------------------------------------

def test_notebook_with_outputs_fails_check_until_cleaned(project, capsys, run, snapshot):
    path = project / "book" / "notebooks" / "senet.ipynb"
    committed = path.read_bytes()
    nb = json.loads(committed)
    code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and not c["metadata"])
    nb["cells"][code].update(execution_count=3, outputs=[{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}])
    nb["metadata"]["language_info"]["version"] = "3.11.7"
    path.write_text(json.dumps(nb, indent=1) + "\n")
    before = snapshot(project)
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert (f"book/notebooks/senet.ipynb: must be committed clean, but has outputs in cell {code}; execution counts "
            f"in cell {code}; notebook metadata (language_info): run `attnzoo clean senet`") in err
    assert snapshot(project) == before
    assert run(project, "clean", "senet") == 0
    assert f"cleaned book/notebooks/senet.ipynb: removed outputs in cell {code}" in capsys.readouterr().out
    assert path.read_bytes() == committed
    before = snapshot(project)
    assert run(project, "clean", "all") == 0
    assert snapshot(project) == before


def test_clean_refuses_unknown_ids_and_broken_notebooks_without_writing(project, capsys, run, snapshot):
    path = project / "book" / "notebooks" / "cbam.ipynb"
    path.write_text(path.read_text()[:-40])
    before = snapshot(project)
    assert run(project, "clean", "senet", "sennet") == 1
    assert "book/notebooks/sennet.ipynb: no such notebook; did you mean senet" in capsys.readouterr().err
    assert run(project, "clean", "cbam") == 1
    assert re.search(r"book/notebooks/cbam\.ipynb: not valid JSON \(line \d+\)", capsys.readouterr().err)
    assert run(project, "check") == 1
    assert re.search(r"book/notebooks/cbam\.ipynb: not valid JSON \(line \d+\)", capsys.readouterr().err)
    assert snapshot(project) == before


def test_notebook_placeholders_parameters_and_cite_keys_are_named_with_line(project, capsys, run):
    path = project / "book" / "notebooks" / "senet.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][0]["source"][-1] += " See also {cite:p}`hu2018squeez, woo2018cbam`."
    nb["cells"][1]["source"].append("\nTODO explain the scale step.")
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["metadata"] = {}
    path.write_text(json.dumps(nb, indent=1) + "\n")
    (project / "book" / "intro.md").write_text("# Intro\n\nAttention {cite}`nobody2099attention` is old.\n")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert (f"book/notebooks/senet.ipynb:{line_of(path, 'hu2018squeez,')}: cell 0: {{cite}} key 'hu2018squeez' "
            "is not in references.bib; did you mean hu2018squeeze") in err
    assert "'woo2018cbam' is not in references.bib" not in err
    assert (f"book/notebooks/senet.ipynb:{line_of(path, 'TODO explain')}: cell 1: placeholder left from "
            "`attnzoo new`: 'TODO explain the scale step.'") in err
    assert "book/notebooks/senet.ipynb: needs exactly one code cell tagged 'parameters'" in err
    assert "book/intro.md:3: {cite} key 'nobody2099attention' is not in references.bib" in err


def test_scaffolded_notebook_of_a_catalogued_entry_is_listed_by_adding_the_printed_line(project, capsys, run):
    assert run(project, "new", "ulsam") == 0
    capsys.readouterr()
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert ("book/notebooks/ulsam.ipynb: notebook is not listed by any catalogue entry (field notebook) "
            "(add `notebook: book/notebooks/ulsam.ipynb` to catalogue/ulsam.yaml)") in err
    assert "impl/attnzoo/attention/ulsam.py:1: placeholder left from `attnzoo new`" not in err  # line 1 is the title
    assert re.search(r"impl/attnzoo/attention/ulsam\.py:\d+: placeholder left from `attnzoo new` \(and on \d+ "
                     r"more lines\): write the code", err)
    assert re.search(r"tests/attention/test_ulsam\.py:\d+: placeholder left", err)
    assert re.search(r"book/notebooks/ulsam\.ipynb:\d+: cell 0: placeholder left", err)


# ---- catalogue and bibliography messages --------------------------------------------------------------------

def test_enum_fields_and_registry_names_suggest_the_closest(project, capsys, run, edit_entry):
    edit_entry(project, "senet", venue="CVPR18", tags=["clasification"],
               implementation={"attention": ["see"], "models": ["se"]})
    edit_entry(project, "cbam", category="chanel-attention")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "venue: 'CVPR18' is not one of the allowed values; did you mean CVPR" in err
    assert "tags.0: 'clasification' is not one of the allowed values; did you mean classification" in err
    assert "category: 'chanel-attention' is not one of the allowed values; did you mean channel-attention" in err
    assert "implementation.attention: 'see' is not a registered attention name; did you mean se" in err
    assert ("implementation.models: 'se' is not a registered model name; it is a registered attention: list it "
            "under implementation.attention") in err


def test_pattern_fields_explain_the_rule(project, capsys, run, edit_entry):
    edit_entry(project, "senet", links={"paper": "http://arxiv.org/abs/1709.01507"}, arxiv="1709.01507v2")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "links.paper: 'http://arxiv.org/abs/1709.01507': must be an https:// address" in err
    assert "arxiv: '1709.01507v2': must be an arXiv identifier without version" in err


def test_duplicate_paper_blames_the_newer_file_whatever_its_name(project, capsys, run, edit_entry):
    catalogue = project / "catalogue"
    shutil.copy(catalogue / "cbam.yaml", catalogue / "a-cbam.yaml")  # sorts before cbam.yaml, but is newer
    new = edit_entry(project, "a-cbam", id="a-cbam", title="CBAM: Convolutional Block Attention Module.")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert (f"catalogue/a-cbam.yaml:{line_of(new, 'arxiv:')}: arxiv: same arXiv id 1807.06521 as "
            "catalogue/cbam.yaml") in err
    assert f"catalogue/a-cbam.yaml:{line_of(new, 'title:')}: title: near-identical title to catalogue/cbam.yaml" in err
    assert (f"catalogue/a-cbam.yaml:{line_of(new, 'bibkey:')}: bibkey: 'woo2018cbam' is already used by "
            "catalogue/cbam.yaml") in err
    assert "error: catalogue/cbam.yaml" not in err
    newest = max(new.stat().st_mtime_ns, (catalogue / "cbam.yaml").stat().st_mtime_ns)
    os.utime(catalogue / "cbam.yaml", ns=(newest + 10**9, newest + 10**9))  # now cbam.yaml is the newer one
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/cbam.yaml:12: arxiv: same arXiv id 1807.06521 as catalogue/a-cbam.yaml" in err
    assert "error: catalogue/a-cbam.yaml" not in err


def test_duplicate_paper_blames_the_file_git_reports_new_before_modification_times(project, capsys, run):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], cwd=project, check=True)
    copy = project / "catalogue" / "cbam2.yaml"
    copy.write_text((project / "catalogue" / "cbam.yaml").read_text().replace("id: cbam", "id: cbam2"))
    old = (project / "catalogue" / "cbam.yaml").stat().st_mtime_ns
    os.utime(copy, ns=(old - 10**9, old - 10**9))  # older on disk, but untracked
    assert run(project, "check") == 1
    assert "catalogue/cbam2.yaml:12: arxiv: same arXiv id 1807.06521 as catalogue/cbam.yaml" in capsys.readouterr().err


def test_malformed_bib_record_gives_its_line_and_reason_and_nothing_else(project, capsys, run):
    bib = project / "references.bib"
    text = bib.read_text()
    first = text.index("@")
    broken = "@article{broken2020,\n  title = {Unclosed brace,\n  author = {A. Person},\n  year = {2020}\n}\n\n"
    bib.write_text(text[:first] + broken + text[first:])
    assert run(project, "check") == 1
    captured = capsys.readouterr()
    line = text[:first].count("\n") + 1
    assert re.search(rf"references\.bib:{line}: cannot parse record 'broken2020': \S.+ \(check its braces",
                     captured.err)
    assert "Parsing of" not in captured.out + captured.err and "aborted" not in captured.out + captured.err


def test_placeholder_in_an_existing_bib_record_is_named(project, capsys, run):
    bib = project / "references.bib"
    bib.write_text(bib.read_text().replace("title     = {Squeeze-and-Excitation Networks}", "title = {TODO}", 1))
    assert run(project, "check") == 1
    assert (f"references.bib:{line_of(bib, '{hu2018squeeze,')}: title: entry 'hu2018squeeze': placeholder left "
            "from `attnzoo new`: 'TODO'") in capsys.readouterr().err


# ---- the package itself: checked in a subprocess on a copy that includes impl/ ----------------------------------

@pytest.fixture
def full_project(project):
    """The metadata copy plus the package source, so that a broken module can be tried safely."""
    shutil.copytree(ROOT / "impl", project / "impl", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "impl" / "attnzoo" / "attention" / "ulsam.py").unlink(missing_ok=True)  # catalogued in the copy
    return project


def check_in_subprocess(root):
    env = {**os.environ, "PYTHONPATH": str(root / "impl"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "attnzoo.cli", "--root", str(root), "check"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_syntax_error_in_a_module_is_a_problem_with_file_and_line(full_project, snapshot):
    module = full_project / "impl" / "attnzoo" / "attention" / "eca.py"
    lines = module.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("class "))
    lines.insert(at, "def broken(:\n")
    module.write_text("".join(lines))
    before = snapshot(full_project)
    result = check_in_subprocess(full_project)
    assert result.returncode == 1, result.stderr
    assert f"error: impl/attnzoo/attention/eca.py:{at + 1}: does not import" in result.stderr
    assert "SyntaxError" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(full_project) == before


def test_an_untouched_scaffold_and_a_file_registering_nothing_fail_check(full_project, capsys, run, snapshot):
    assert run(full_project, "new", "ulsam") == 0
    helper = full_project / "impl" / "attnzoo" / "attention" / "shared_bits.py"
    helper.write_text('"""Helpers that belong in attnzoo/layers."""\n\n\ndef double(x):\n    return 2 * x\n')
    before = snapshot(full_project)
    result = check_in_subprocess(full_project)
    assert result.returncode == 1
    err = result.stderr
    module = full_project / "impl" / "attnzoo" / "attention" / "ulsam.py"
    raise_line = line_of(module, 'raise NotImplementedError("TODO build')
    assert (f"impl/attnzoo/attention/ulsam.py:{raise_line}: registered attention 'ulsam' cannot be built with its "
            "defaults: create_attention('ulsam', 64) raised NotImplementedError") in err
    assert "impl/attnzoo/attention/ulsam.py: registered attention 'ulsam' is claimed by no catalogue entry" in err
    assert "impl/attnzoo/attention/shared_bits.py: registers no name" in err
    for path in ("impl/attnzoo/attention/ulsam.py", "tests/attention/test_ulsam.py", "book/notebooks/ulsam.ipynb"):
        assert re.search(rf"{re.escape(path)}:\d+: .*placeholder left from `attnzoo new`", err), path
    assert snapshot(full_project) == before
