"""The catalogue tools on good and bad input: errors name the file and field, exit non-zero, change nothing."""
import json
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

from attnzoo.catalogue import categories, load_catalogue
from attnzoo.cli import main
from attnzoo.paths import SCHEMA, project_root
from attnzoo.tables import END, START

ROOT = project_root()


def test_schema_is_valid_and_every_entry_passes():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML has it: ten times faster
    for path in (ROOT / "catalogue").glob("*.yaml"):
        validator.validate(yaml.load(path.read_text(), Loader=loader))


def test_the_repository_itself_passes_check_and_readme_check(capsys):
    assert main(["--root", str(ROOT), "check"]) == 0
    assert main(["--root", str(ROOT), "readme", "--check"]) == 0


def test_check_passes_on_a_copy(project, run):
    assert run(project, "check") == 0


def test_malformed_yaml_names_file_and_line(project, capsys, run):
    (project / "catalogue" / "senet.yaml").write_text("id: senet\ntitle: [unclosed\n")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/senet.yaml:" in err and "malformed YAML" in err


def test_missing_field_is_named(project, capsys, run, edit_entry):
    edit_entry(project, "cbam", venue=None)
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/cbam.yaml" in err and "venue" in err and "missing required field" in err


def test_unknown_category_names_file_field_and_line(project, capsys, run):
    path = project / "catalogue" / "senet.yaml"
    text = path.read_text().replace("category: channel-attention", "category: channel-atention")
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("category:"))
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert f"catalogue/senet.yaml:{line}: category: 'channel-atention' is not one of" in err


def test_bibkey_missing_from_bib(project, capsys, run, edit_entry):
    edit_entry(project, "vit", bibkey="nobody2099missing")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/vit.yaml" in err and "bibkey" in err and "nobody2099missing" in err
    assert "'dosovitskiy2021image' is used by no catalogue paper" in err


def test_duplicate_bib_key_is_reported(project, capsys, run):
    bib = project / "references.bib"
    bib.write_text(bib.read_text() + "\n@misc{hu2018squeeze,\n  title={x}, author={y}, year={2018}\n}\n")
    assert run(project, "check") == 1
    assert "duplicate key 'hu2018squeeze'" in capsys.readouterr().err


def test_duplicate_id_and_duplicate_paper(project, capsys, run, edit_entry):
    shutil.copy(project / "catalogue" / "cbam.yaml", project / "catalogue" / "cbam-copy.yaml")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/cbam-copy.yaml" in err and "id 'cbam' must equal the file name 'cbam-copy'" in err
    edit_entry(project, "cbam-copy", id="cbam-copy", bibkey="woo2018cbam", implementation=None, status="catalogued",
               notebook=None, reported=None)
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "same arXiv id 1807.06521" in err or "near-identical title" in err


def test_non_english_main_idea_and_bad_link(project, capsys, run, edit_entry):
    edit_entry(project, "senet", main_idea="通道注意力 for every channel", links={"paper": "http://arxiv.org/abs/1709.01507"})
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "main_idea: must be written in English" in err and "links.paper" in err


def test_unregistered_implementation_name(project, capsys, run, edit_entry):
    edit_entry(project, "senet", implementation={"attention": ["se", "no_such_module"]})
    assert run(project, "check") == 1
    assert "'no_such_module' is not a registered attention name" in capsys.readouterr().err


def test_missing_notebook_file(project, capsys, run):
    (project / "book" / "notebooks" / "cbam.ipynb").unlink()
    assert run(project, "check") == 1
    assert "book/notebooks/cbam.ipynb does not exist" in capsys.readouterr().err


def test_every_problem_is_listed_not_just_the_first(project, capsys, run, edit_entry):
    edit_entry(project, "senet", venue="CVPR18")
    edit_entry(project, "cbam", year="2018")
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "catalogue/senet.yaml" in err and "catalogue/cbam.yaml" in err


def test_pipe_and_html_in_main_idea_stay_escaped(project, run, edit_entry):
    edit_entry(project, "senet", main_idea="Gates <b>channels</b> | then rescales & sums.")
    assert run(project, "readme") == 0
    text = (project / "README.md").read_text()
    row = next(l for l in text.splitlines() if "Squeeze-and-Excitation Networks" in l)
    assert "&lt;b&gt;channels&lt;/b&gt; \\| then rescales &amp; sums." in row
    unescaped_pipes = row.replace("\\|", "").count("|")
    assert unescaped_pipes == 6, row  # 5 columns


@pytest.mark.parametrize("breakage", ["missing", "duplicated", "reversed"])
def test_broken_readme_markers_refuse_and_change_nothing(project, capsys, breakage, run, snapshot):
    readme = project / "README.md"
    text = readme.read_text()
    if breakage == "missing":
        text = text.replace(END, "")
    elif breakage == "duplicated":
        text = text + "\n" + START + "\n"
    else:
        text = text.replace(START, "@@").replace(END, START).replace("@@", END)
    readme.write_text(text)
    before = snapshot(project)
    assert run(project, "readme") == 1
    assert run(project, "readme", "--check") == 1
    assert "marker" in capsys.readouterr().err
    assert snapshot(project) == before


def test_readme_check_detects_stale_tables_without_writing(project, capsys, run, edit_entry):
    edit_entry(project, "senet", main_idea="A freshly rewritten one-sentence summary of squeeze and excitation.")
    readme_before = (project / "README.md").read_bytes()
    assert run(project, "readme", "--check") == 1
    assert "stale" in capsys.readouterr().err
    assert (project / "README.md").read_bytes() == readme_before
    assert run(project, "readme") == 0
    assert run(project, "readme", "--check") == 0
    text = (project / "README.md").read_text()
    assert "freshly rewritten" in text
    # hand-written text around the markers survives
    assert text.split(START)[0] == readme_before.decode().split(START)[0]
    assert text.split(END)[1] == readme_before.decode().split(END)[1]


def test_readme_refuses_on_invalid_catalogue(project, capsys, run, edit_entry):
    edit_entry(project, "senet", category="nonsense")
    before = (project / "README.md").read_bytes()
    assert run(project, "readme") == 1
    assert (project / "README.md").read_bytes() == before


def test_readme_has_contents_and_a_table_per_used_category():
    entries, _ = load_catalogue(ROOT)
    text = (ROOT / "README.md").read_text()
    region = text.split(START)[1].split(END)[0]
    assert region.index("**Contents**") < region.index("| Paper | Venue | Code | Main idea | Notebook |")
    used = {e.category for e in entries.values()}
    assert region.count("| Paper | Venue | Code | Main idea | Notebook |") == len(used)
    assert all(c in categories() for c in used)


def test_new_id_scaffolds_every_file_and_refuses_to_overwrite(project, capsys, run, snapshot):
    before = snapshot(project)
    assert run(project, "new", "my-attention") == 0
    created = {"catalogue/my-attention.yaml", "book/notebooks/my-attention.ipynb",
               "impl/attnzoo/attention/my_attention.py", "tests/attention/test_my_attention.py"}
    after = snapshot(project)
    assert set(after) - set(before) == created
    assert [f for f in before if after[f] != before[f]] == ["references.bib"]
    assert after["references.bib"].startswith(before["references.bib"])  # appended, nothing rewritten
    assert "@article{TODO-my-attention," in after["references.bib"].decode()
    nb = json.loads(after["book/notebooks/my-attention.ipynb"])
    assert [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert any("{cite}`TODO-my-attention`" in "".join(c["source"]) for c in nb["cells"])
    before = snapshot(project)
    assert run(project, "new", "my-attention") == 1
    assert "catalogue/my-attention.yaml:15: status: 'my-attention' is already implemented" in capsys.readouterr().err
    (project / "catalogue" / "my-attention.yaml").unlink()
    del before["catalogue/my-attention.yaml"]
    assert run(project, "new", "my-attention") == 1
    err = capsys.readouterr().err
    assert "impl/attnzoo/attention/my_attention.py: already exists; refusing to overwrite" in err
    assert "references.bib: key: key 'TODO-my-attention' already exists" in err
    assert snapshot(project) == before


def test_new_rejects_bad_id_without_repeating_the_field(project, capsys, run, snapshot):
    before = snapshot(project)
    assert run(project, "new", "Bad_ID") == 1
    err = capsys.readouterr().err
    assert "catalogue/Bad_ID.yaml: id: 'Bad_ID': an id must be lowercase letters, digits and single hyphens" in err
    assert "id: id" not in err
    assert snapshot(project) == before


def test_run_reports_failing_cell_and_its_output_fails_check_until_cleaned(project, tmp_path, capsys, run):
    """The executed copy of a failing notebook (papermill's error banner and injected parameters), cleared with
    `nbconvert --clear-output` and committed by mistake, is rejected; `attnzoo clean` restores the source."""
    from attnzoo.scaffold import write_notebook

    nb = project / "book" / "notebooks" / "senet.ipynb"
    write_notebook(nb, [("parameters", 'device = "cpu"\nbatch_size = 2\nimage_size = 8\nseed = 0'),
                        ("code", "import attnzoo\nx = 1"),
                        ("code", "raise RuntimeError('boom at ' + str(image_size))")])
    source = nb.read_bytes()
    out = tmp_path / "out"
    assert run(project, "run", "senet", "-p", "image_size", "5", "--output-dir", str(out)) == 1
    err = capsys.readouterr().err
    assert "senet.ipynb, cell 2" in err and "RuntimeError: boom at 5" in err and "Traceback" in err
    assert nb.read_bytes() == source

    shutil.copy(out / "senet.ipynb", nb)
    subprocess.run([sys.executable, "-m", "nbconvert", "--clear-output", "--inplace", str(nb)], check=True,
                   capture_output=True)
    executed = nb.read_bytes()
    assert b"papermill-error-cell-tag" in executed and b'"outputs": []' in executed
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert ("book/notebooks/senet.ipynb: must be committed clean, but has papermill's error and parameter cells 0, 2, "
            "4") in err and "run `attnzoo clean senet`" in err
    assert nb.read_bytes() == executed
    assert run(project, "clean", "senet") == 0
    assert nb.read_bytes() == source


def test_run_unknown_id_and_bad_parameter(project, capsys, run):
    assert run(project, "run", "no-such-paper") == 2
    assert "catalogue/no-such-paper.yaml" in capsys.readouterr().err
    assert run(project, "run", "senet", "-p", "not an identifier", "1") == 2


def test_parse_parameters_types():
    from attnzoo.notebooks import parse_parameters

    assert parse_parameters([("batch_size", "3"), ("lr", "0.5"), ("device", "cuda"), ("flag", "true")]) == {
        "batch_size": 3, "lr": 0.5, "device": "cuda", "flag": True}


def test_ci_runs_the_readme_test_command():
    """.ci/run calls the Quick start's test command verbatim (the one that ends in `python -m pytest -n auto`)."""
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("pip install") and "pytest" in line]
    assert len(commands) == 1, commands
    assert "[test]" in commands[0] and commands[0].endswith("python -m pytest -n auto")
    assert commands[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_link_checker_skips_without_network(monkeypatch, project, capsys, run):
    import attnzoo.links as links

    monkeypatch.setattr(links, "network_available", lambda *a, **k: False)
    assert run(project, "links") == 0
    assert "skipped: no network" in capsys.readouterr().out


def test_link_checker_reports_broken_links(monkeypatch, project, capsys, run):
    import attnzoo.links as links

    monkeypatch.setattr(links, "network_available", lambda *a, **k: True)
    monkeypatch.setattr(links, "_status", lambda url, timeout: 404 if url.endswith("1709.01507") else 200)
    assert run(project, "links") == 1
    err = capsys.readouterr().err
    assert "catalogue/senet.yaml" in err and "links.paper" in err and "404" in err


def test_issue_form_categories_follow_the_schema():
    form = yaml.safe_load((ROOT / ".github" / "ISSUE_TEMPLATE" / "propose-paper.yml").read_text())
    field = next(b for b in form["body"] if b.get("id") == "category")
    assert field["attributes"]["options"] == categories()


def test_workflows_are_valid_yaml_with_read_only_permissions():
    workflows = list((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.stem for w in workflows} >= {"tests", "readme", "book", "gpu-notebooks"}
    for w in workflows:
        data = yaml.safe_load(w.read_text())
        assert data["permissions"] == {"contents": "read"}, w.name
        assert data["jobs"]
    gpu = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu-notebooks.yml").read_text())
    assert gpu["jobs"]["notebooks"]["runs-on"] == ["self-hosted", "gpu"]
    assert "pull_request" not in gpu[True]  # yaml reads the key `on` as True
