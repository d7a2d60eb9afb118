"""The course's checks must be able to fail: each test breaks a notebook, a mirror, the catalogue or the
data manifest in a temporary copy and expects the check to say so."""

from __future__ import annotations

import copy
import json
import re

import nbformat
import pytest

from tools import catalogue, check_contract, check_data, check_mirrors, new_reading, run_notebook
from tools.course import HEALTHY_RUN, MEMORY_LINE, RUNTIME_LINE, SECTIONS, TEMPLATE, Reading


@pytest.fixture
def fake_colab(monkeypatch):
    url = lambda path: f"https://colab.example/{path.name}"  # noqa: E731
    monkeypatch.setattr(check_contract, "colab_url", url)
    return url


@pytest.fixture
def reading(tmp_path, fake_colab):
    """A contract-keeping reading built from the executed template, at notebooks/foundations/F99_demo."""
    nb = nbformat.read(TEMPLATE, as_version=4)
    nb.metadata["course"].update(
        {"id": "F99", "title": "Demo", "part": "foundations", "prerequisites": ["F1"]}
    )
    first = nb.cells[0]
    first.source = re.sub(r"^# .*$", "# F99 · Demo", first.source, count=1, flags=re.M)
    first.source = re.sub(
        r"\(https://colab\.research[^)]*\)", "(https://colab.example/F99_demo.ipynb)", first.source
    )
    first.source = "\n".join(line for line in first.source.splitlines() if "Template guide" not in line)
    # From notebooks/foundations/: the shipped badge image, and the unwritten prerequisite linked to its
    # syllabus entry (both files exist in the temporary repository).
    first.source = first.source.replace("](docs/img/colab-badge.svg)", "](../../docs/img/colab-badge.svg)")
    first.source = first.source.replace("](docs/syllabus.md#f1)", "](../../docs/syllabus.md#f1)")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "colab-badge.svg").write_text("<svg/>", encoding="utf-8")
    (tmp_path / "docs" / "syllabus.md").write_text("### F1\n", encoding="utf-8")
    for cell in nb.cells:
        cell.source = cell.source.replace("Template guide", "Guide")
    path = tmp_path / "notebooks" / "foundations" / "F99_demo.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return path


def problems_after(path, edit):
    nb = nbformat.read(path, as_version=4)
    edit(nb)
    nbformat.write(nb, path)
    return check_contract.check(path)


def test_template_keeps_the_contract():
    assert check_contract.check(TEMPLATE) == []


def test_reading_keeps_the_contract(reading):
    assert check_contract.check(reading) == []


def test_unlinked_prerequisite_fails(reading):
    def edit(nb):
        nb.cells[0].source = nb.cells[0].source.replace("](../../docs/syllabus.md#f1)", "](#f1)")

    found = problems_after(reading, edit)
    assert "title block: prerequisite F1 is not linked (link it to docs/syllabus.md#f1)" in found, found


def drop_section(title):
    def edit(nb):
        nb.cells = [c for c in nb.cells if not c.source.startswith(f"## {title}")]

    return edit


@pytest.mark.parametrize("title", ["Misconceptions", "中文速览", "Check against a reference"])
def test_missing_section_fails(reading, title):
    found = problems_after(reading, drop_section(title))
    assert any("sections:" in p for p in found), found


def test_sections_out_of_order_fail(reading):
    def edit(nb):
        i = next(k for k, c in enumerate(nb.cells) if c.source.startswith("## Exercises"))
        j = next(k for k, c in enumerate(nb.cells) if c.source.startswith("## References"))
        nb.cells[i], nb.cells[j] = nb.cells[j], nb.cells[i]

    assert any("sections:" in p for p in problems_after(reading, edit))


def test_badge_must_point_at_own_path(reading):
    def edit(nb):
        nb.cells[0].source = nb.cells[0].source.replace("F99_demo.ipynb", "other.ipynb")

    assert any("Colab badge" in p for p in problems_after(reading, edit))


def test_runtime_must_match_metadata(reading):
    def edit(nb):
        nb.metadata["course"]["cpu_seconds"] = 99

    assert any("run time" in p for p in problems_after(reading, edit))


def test_peak_memory_must_match_metadata(reading):
    def edit(nb):
        nb.metadata["course"]["peak_memory_mb"] = 12345

    assert any("peak memory" in p for p in problems_after(reading, edit))


def test_peak_memory_line_is_required(reading):
    def edit(nb):
        nb.cells[0].source = MEMORY_LINE.sub("", nb.cells[0].source)

    assert any("Peak memory" in p for p in problems_after(reading, edit))


def test_reproduction_needs_a_healthy_run_cell(reading):
    def edit(nb):
        for c in nb.cells:
            c.source = c.source.replace(HEALTHY_RUN, "### Results")

    assert any("healthy run" in p for p in problems_after(reading, edit))


def test_healthy_run_heading_needs_a_code_cell_after_it(reading):
    def edit(nb):
        at = next(i for i, c in enumerate(nb.cells) if HEALTHY_RUN in c.source)
        nb.cells = nb.cells[: at + 1] + [c for c in nb.cells[at + 1 :] if c.cell_type == "markdown"]

    assert any("printing the expected values" in p for p in problems_after(reading, edit))


@pytest.mark.parametrize("title", ["Derivations", "Walkthrough"])
def test_code_cell_without_prose_fails_in_derivations_and_walkthrough(reading, title):
    def edit(nb):
        at = next(i for i, c in enumerate(nb.cells) if c.source.startswith(f"## {title}"))
        code = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")]
        nb.cells[at + 1 : at + 1] = code

    found = problems_after(reading, edit)
    assert any(f"{title}: code cell starting 'y = 2'" in p for p in found), found


def test_dead_relative_link_fails(reading):
    links = (
        "See [F1 · The Transformer](F1_transformer.ipynb) and [the paper](https://arxiv.org/abs/1706.03762)."
    )

    def edit(nb):
        nb.cells[0].source += "\n\n" + links

    found = problems_after(reading, edit)
    assert [p for p in found if p.startswith("links:")] == [
        "links: [F1_transformer.ipynb] does not resolve from foundations/ "
        "(a reading not yet written links to its entry in docs/syllabus.md)"
    ], found


def test_reference_check_needs_an_assert(reading):
    def edit(nb):
        for c in nb.cells:
            if c.cell_type == "code":
                c.source = c.source.replace("assert_close(", "compare(")

    assert any("no code cell with an assert" in p for p in problems_after(reading, edit))


def test_outputs_must_come_from_one_ordered_run(reading):
    def edit(nb):
        code = [c for c in nb.cells if c.cell_type == "code"]
        code[1].execution_count, code[2].execution_count = code[2].execution_count, code[1].execution_count

    assert any("executed once, top to bottom" in p for p in problems_after(reading, edit))


def test_unexecuted_notebook_fails(reading):
    def edit(nb):
        for c in nb.cells:
            if c.cell_type == "code":
                c.execution_count, c.outputs = None, []

    assert any("outputs:" in p for p in problems_after(reading, edit))


def test_colab_cell_must_be_skipped_by_ci(reading):
    def edit(nb):
        for c in nb.cells:
            c.metadata.pop("tags", None)

    assert any("nbval-skip" in p for p in problems_after(reading, edit))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("id", "Z1", "not a syllabus id"),
        ("part", "vlm", "does not belong to part"),
        ("papers", [], "non-empty list"),
        ("papers", [{"title": "x", "arxiv": "12.3"}], "not an id like"),
        ("cpu_seconds", 0, "positive number"),
        ("peak_memory_mb", float("nan"), "positive number"),
        ("peak_memory_mb", True, "positive number"),
        ("prerequisites", ["foundations"], "list of reading ids"),
    ],
)
def test_bad_metadata_fails(reading, key, value, expected):
    def edit(nb):
        nb.metadata["course"][key] = value

    found = problems_after(reading, edit)
    assert any(expected in p for p in found), found


def test_leftover_template_guide_fails(reading):
    def edit(nb):
        nb.cells[1].source += "\n> Template guide: fill me"

    assert any("guide text" in p for p in problems_after(reading, edit))


def test_stale_mirror_is_detected(reading, capsys):
    mirror = reading.with_suffix(".py")
    assert check_mirrors.main([str(reading)]) == 1  # missing
    assert check_mirrors.main(["--write", str(reading)]) == 0
    assert check_mirrors.main([str(reading)]) == 0
    nb = nbformat.read(reading, as_version=4)
    nb.cells[-1].source += "\nOne more line."
    nbformat.write(nb, reading)
    assert check_mirrors.main([str(reading)]) == 1
    assert "stale mirror" in capsys.readouterr().out
    assert mirror.exists()


def test_set_runtime_rewrites_metadata_and_title():
    nb = nbformat.read(TEMPLATE, as_version=4)
    run_notebook.set_runtime(nb, 41.2)
    assert nb.metadata["course"]["cpu_seconds"] == 42
    assert RUNTIME_LINE.search(nb.cells[0].source).group(1) == "42"


def test_set_memory_rewrites_or_adds_the_line():
    nb = nbformat.read(TEMPLATE, as_version=4)
    run_notebook.set_memory(nb, 411.2)
    assert nb.metadata["course"]["peak_memory_mb"] == 412
    assert MEMORY_LINE.search(nb.cells[0].source).group(1) == "412"
    nb.cells[0].source = MEMORY_LINE.sub("", nb.cells[0].source)
    run_notebook.set_memory(nb, 99.0)
    lines = nb.cells[0].source.splitlines()
    at = next(i for i, line in enumerate(lines) if RUNTIME_LINE.search(line))
    assert MEMORY_LINE.search(lines[at + 2]).group(1) == "99"  # a blank line, then the new line


def test_execute_measures_time_and_peak_memory(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("big = bytearray(200_000_000); big[::4096] = b'x' * len(big[::4096])")
    ]
    seconds, megabytes = run_notebook.execute(nb, tmp_path)
    assert seconds > 0 and megabytes > 200  # the 200 MB buffer was touched, so it is resident
    assert len(nb.cells) == 1 and nb.cells[0].execution_count == 1  # the probe cell is gone


def test_catalogue_renders_and_detects_staleness(reading, tmp_path, monkeypatch):
    r = Reading.from_notebook(reading)
    monkeypatch.setattr(catalogue, "colab_url", lambda p: "https://colab.example/x")
    monkeypatch.setattr(catalogue, "ROOT", tmp_path)
    table = catalogue.render([r])
    assert "| F99 | [Demo](notebooks/foundations/F99_demo.ipynb)" in table
    assert "[Paper title](https://arxiv.org/abs/0000.00000)" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{catalogue.START}\nold table\n{catalogue.END}\noutro\n", encoding="utf-8")
    monkeypatch.setattr(catalogue, "README", readme)
    monkeypatch.setattr(catalogue, "notebooks", lambda: [reading])
    assert catalogue.main(["--check"]) == 1
    assert catalogue.main([]) == 0
    assert catalogue.main(["--check"]) == 0
    assert readme.read_text(encoding="utf-8").startswith("intro\n") and "outro" in readme.read_text(
        encoding="utf-8"
    )


def test_repository_catalogue_and_mirrors_are_current():
    assert catalogue.main(["--check"]) == 0
    assert check_mirrors.main([]) == 0


def write_manifest(data_dir, entries):
    (data_dir / "manifest.json").write_text(json.dumps({"files": entries}), encoding="utf-8")


def test_data_manifest_catches_changes(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    entry = {"path": "a.txt", "sha256": check_data.sha256(tmp_path / "a.txt"), "bytes": 6}
    entry |= {"source": "made here", "license": "CC0-1.0", "used_by": ["F99"]}
    write_manifest(tmp_path, [entry])
    assert check_data.problems(tmp_path) == []
    (tmp_path / "a.txt").write_text("hellO\n", encoding="utf-8")
    assert any("sha256" in p for p in check_data.problems(tmp_path))
    (tmp_path / "b.txt").write_text("x", encoding="utf-8")
    assert any("not in the manifest" in p for p in check_data.problems(tmp_path))
    bad = copy.deepcopy(entry)
    del bad["source"]
    write_manifest(tmp_path, [bad])
    assert any("lacks source" in p for p in check_data.problems(tmp_path))


def test_repository_data_matches_manifest():
    assert check_data.problems(check_data.ROOT / "data") == []


def test_new_reading_fills_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(new_reading, "NOTEBOOKS", tmp_path)
    monkeypatch.setattr(new_reading, "colab_url", lambda p: f"https://colab.example/{p.name}")
    path = new_reading.create("V99", "vlm", "demo_reading", "A demo")
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["course"]["id"] == "V99" and nb.metadata["course"]["part"] == "vlm"
    assert nb.cells[0].source.startswith("# V99 · A demo")
    assert "(https://colab.example/V99_demo_reading.ipynb)" in nb.cells[0].source
    assert path.with_suffix(".py").exists()
    assert all(c.execution_count is None for c in nb.cells if c.cell_type == "code")
    with pytest.raises(SystemExit):
        new_reading.create("V99", "rl", "x", "wrong part")
    with pytest.raises(SystemExit):
        new_reading.create("V99", "vlm", "demo_reading", "exists already")


def test_sections_constant_matches_the_template():
    nb = nbformat.read(TEMPLATE, as_version=4)
    headings = [
        line[3:]
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("## ")
    ]
    assert headings == SECTIONS
