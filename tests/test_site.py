"""The site's tools, without a browser: the syllabus copy and the prerequisite check, the learning-path map,
the issue form, the Colab badge tools, the site's generated sources, its mkdocs hooks and the static parts
of the browser test. Each generated file is checked fresh, and each check is shown able to fail."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from tools import badges, issue_form, learning_path, site, site_hooks, site_test, syllabus
from tools.course import PARTS, ROOT, Reading, colab_url, notebooks


@pytest.fixture(scope="module")
def readings():
    return [Reading.from_notebook(p) for p in notebooks()]


@pytest.fixture(scope="module")
def entries():
    return syllabus.load()


def fake_reading(rid="F99", prerequisites=("F1",), part="foundations", path=None):
    return Reading(
        path=path or ROOT / "notebooks" / part / f"{rid}_demo.ipynb",
        id=rid,
        title="Demo",
        part=part,
        papers=[{"title": "A paper", "arxiv": "2401.00001"}],
        prerequisites=list(prerequisites),
        cpu_seconds=12,
        peak_memory_mb=300,
    )


# The syllabus and the prerequisite check


def test_syllabus_lists_45_readings_in_the_four_parts(entries):
    assert len(entries) == 45
    assert len({e["id"] for e in entries}) == 45
    assert {e["part"] for e in entries} == set(PARTS)
    assert all(
        e["id"][0] == {"foundations": "F", "vlm": "V", "llm": "L", "rl": "R"}[e["part"]] for e in entries
    )


@pytest.mark.skipif(
    not syllabus.SYLLABUS_MD.exists(), reason="../shared/guide/SYLLABUS.md not beside the repo"
)
def test_syllabus_copy_is_fresh():
    fresh = syllabus.render(syllabus.parse_markdown(syllabus.SYLLABUS_MD.read_text(encoding="utf-8")))
    assert syllabus.SYLLABUS_JSON.read_text(encoding="utf-8") == fresh, "run python tools/syllabus.py"


def test_parse_markdown_reads_table_rows_only():
    text = "# S\n\n| id | reading | papers |\n| --- | --- | --- |\n| F1 | The Transformer | x |\n| R10 | R1 | y |\n"
    assert syllabus.parse_markdown(text) == [
        {"id": "F1", "title": "The Transformer", "part": "foundations", "papers": "x"},
        {"id": "R10", "title": "R1", "part": "rl", "papers": "y"},
    ]
    with pytest.raises(ValueError, match="twice"):
        syllabus.parse_markdown("| F1 | a |\n| F1 | b |\n")


def test_every_prerequisite_of_the_notebooks_is_a_syllabus_id(readings, entries):
    assert syllabus.unknown_ids(readings, entries) == []


def test_prerequisite_check_fails_on_an_unknown_id(entries):
    problems = syllabus.unknown_ids([fake_reading("F2", ["F1", "X7", "V99"])], entries)
    assert len(problems) == 2 and "X7" in problems[0] and "V99" in problems[1]
    assert syllabus.unknown_ids([fake_reading("F99", [])], entries) == [
        f"{Path('notebooks/foundations/F99_demo.ipynb')}: reading id F99 is not in the syllabus"
    ]
    assert syllabus.main(["--check"]) == 0


# The learning-path map


def test_learning_path_svg_is_fresh():
    assert learning_path.SVG.read_text(encoding="utf-8") == learning_path.readme_svg(), (
        "run python tools/learning_path.py"
    )
    assert learning_path.main(["--check"]) == 0


def test_learning_path_shows_every_reading_written_or_planned(readings, entries):
    svg = learning_path.render(entries, readings, lambda r: f"/page/{r.id}")
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    for e in entries:
        assert any(t.startswith(f"{e['id']} · ") for t in texts), e["id"]
    links = [a.get("href") for a in root.iter(f"{ns}a")]
    assert sorted(links) == sorted(f"/page/{r.id}" for r in readings)
    assert texts.count("planned") == len(entries) - len(readings)
    edges = sum(1 for p in root.iter(f"{ns}path") if p.get("marker-end"))
    assert edges == sum(len(r.prerequisites) for r in readings)


def test_learning_path_check_fails_when_stale(tmp_path, monkeypatch):
    stale = tmp_path / "learning_path.svg"
    stale.write_text("<svg/>\n", encoding="utf-8")
    monkeypatch.setattr(learning_path, "SVG", stale)
    assert learning_path.main(["--check"]) == 1


def test_readme_shows_the_learning_path():
    assert "](docs/learning_path.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")


# The issue form


def test_issue_form_is_fresh_and_requires_the_reading_and_the_source():
    entries = issue_form.catalogue_entries()
    assert {e["id"] for e in entries} <= {e["id"] for e in syllabus.load()}
    text = issue_form.FORM.read_text(encoding="utf-8")
    assert text == issue_form.fresh(), "run python tools/issue_form.py"
    form = yaml.safe_load(text)
    fields = {b.get("id"): b for b in form["body"] if b.get("id")}
    dropdown = fields["reading"]
    assert dropdown["type"] == "dropdown"
    options = dropdown["attributes"]["options"]
    assert [o.split(" · ")[0] for o in options[: len(entries)]] == [e["id"] for e in entries]
    assert len(set(options)) == len(options)
    for key in ("reading", "where", "reading-says", "source-says", "source"):
        assert fields[key]["validations"]["required"] is True, key
    assert not (ROOT / ".github" / "ISSUE_TEMPLATE" / "report-an-error.md").exists()


def test_issue_form_check_fails_when_stale(tmp_path, monkeypatch):
    stale = tmp_path / "form.yml"
    stale.write_text(issue_form.fresh().replace("V6 · ", "V66 · "), encoding="utf-8")
    monkeypatch.setattr(issue_form, "FORM", stale)
    assert issue_form.main(["--check"]) == 1


def test_pull_request_template_asks_for_readings_and_cpu_times():
    text = (ROOT / ".github" / "PULL_REQUEST_TEMPLATE.md").read_text(encoding="utf-8")
    assert "Readings this change touches" in text and "CPU time after (s)" in text


# The Colab badge


def test_local_badge_is_an_svg():
    root = ET.fromstring(badges.LOCAL_BADGE.read_text(encoding="utf-8"))
    assert root.tag.endswith("svg") and "Open in Colab" in "".join(root.itertext())


def test_localize_badge_rewrites_only_the_image():
    src = f"# X\n\n[![Open In Colab]({badges.REMOTE_BADGE})](https://colab.research.google.com/github/a/b/blob/main/n.ipynb)"
    out = badges.localize_badge(src, "../../docs/img/colab-badge.svg")
    assert out == src.replace(badges.REMOTE_BADGE, "../../docs/img/colab-badge.svg")
    assert (
        badges.badge_path_from(ROOT / "notebooks" / "vlm" / "V6_qwen2_vl.ipynb")
        == "../../docs/img/colab-badge.svg"
    )


def test_every_colab_link_points_at_an_existing_file():
    for path in notebooks():
        assert badges.check_notebook(path) == [], path


def test_colab_link_check_fails(tmp_path):
    path = ROOT / "notebooks" / "vlm" / "V6_qwen2_vl.ipynb"
    good = colab_url(path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"[![Open In Colab]({badges.REMOTE_BADGE})]({good})")]
    assert any("fetched from Colab's site" in p for p in badges.check_notebook(path, nb))
    # the badge localized for a notebook in notebooks/vlm/ resolves; a missing path or image does not
    nb.cells[0].source = badges.localize_badge(nb.cells[0].source, badges.badge_path_from(path))
    assert badges.check_notebook(path, nb) == []
    nb.cells[0].source = f"[![b](nowhere/badge/colab-badge.svg)]({good.replace('V6_qwen2_vl', 'V6_gone')})"
    problems = badges.check_notebook(path, nb)
    assert any("V6_gone.ipynb, which does not exist" in p for p in problems)
    assert any("badge image nowhere" in p for p in problems)
    nb.cells[0].source = f"[x]({good.replace('/blob/main/', '/blob/dev/')})"
    assert any("@dev" in p for p in badges.check_notebook(path, nb))


# The site's sources


def test_rewrite_links_to_pages_and_github():
    v6 = (ROOT / "notebooks" / "vlm" / "V6_qwen2_vl.ipynb").resolve()
    f2 = (ROOT / "notebooks" / "foundations" / "F2_positional_encodings.ipynb").resolve()
    pages = {f2: "foundations/F2_positional_encodings/", v6: "vlm/V6_qwen2_vl/"}
    src = (
        "[F2](../foundations/F2_positional_encodings.ipynb#rope) [t](../../tests/test_mrope.py) "
        "[gone](../vlm/V99_x.ipynb) [a](#here) [w](https://x.org/a.ipynb)"
    )
    out = site.rewrite_links(src, v6, pages, "vlm/V6_qwen2_vl/")
    assert "[F2](../../foundations/F2_positional_encodings/#rope)" in out
    assert "[t](https://github.com/open-vlm-course/vlm-llm-course/blob/main/tests/test_mrope.py)" in out
    assert "[gone](../vlm/V99_x.ipynb)" in out and "[a](#here)" in out and "(https://x.org/a.ipynb)" in out


def test_header_has_colab_download_cpu_time_and_prerequisites(readings):
    by_id = {r.id: r for r in readings}
    r = fake_reading("F99", ["F2", "F1"])
    text = site.header(r, by_id)
    assert f"]({colab_url(r.path)})" in text and "](../../img/colab-badge.svg)" in text
    assert "[Download the notebook](F99_demo.ipynb)" in text
    assert "**CPU time:** 12 s" in text and "**Peak memory:** 300 MB" in text
    assert "[F2](../../foundations/F2_positional_encodings/)" in text and "F1 (planned)" in text


def test_site_notebook_keeps_outputs_and_serves_the_badge_itself(readings):
    by_id = {r.id: r for r in readings}
    pages = {r.path.resolve(): site.page_dir(r) for r in readings}
    r = readings[0]
    original = nbformat.read(r.path, as_version=4)
    nb = site.site_notebook(r, by_id, pages)
    assert len(nb.cells) == len(original.cells) + 1 and "reading-header" in nb.cells[1].source
    assert badges.REMOTE_BADGE not in "".join(c.source for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.outputs for c in code] == [c.outputs for c in original.cells if c.cell_type == "code"]


def test_index_and_config(readings, entries, tmp_path):
    text = site.index(readings, entries)
    assert '<div class="learning-path"><svg' in text and "## Catalogue" in text
    for r in readings:
        assert f"]({site.page_dir(r)})" in text
    cfg = yaml.safe_load(site.config(readings, tmp_path / "build" / "site-src"))
    assert cfg["docs_dir"] == "docs" and cfg["nav"][0] == {"Home": "index.md"}
    sections = {k for item in cfg["nav"][1:] for k in item}
    assert sections == {PARTS[r.part] for r in readings} | {"Syllabus"}
    parent = yaml.safe_load((ROOT / "site" / "mkdocs.yml").read_text(encoding="utf-8"))
    assert parent["theme"]["font"] is False and "repo_url" not in parent
    jupyter = next(
        p["mkdocs-jupyter"] for p in parent["plugins"] if isinstance(p, dict) and "mkdocs-jupyter" in p
    )
    assert jupyter["execute"] is False


def test_build_writes_the_sources(tmp_path):
    pytest.importorskip("mathjax", reason="the site extra (django-static-mathjax) is not installed")
    out = tmp_path / "site-src"
    built = site.build(out)
    assert (out / "docs" / "index.md").is_file() and (out / "mkdocs.yml").is_file()
    assert (out / "docs" / "assets" / "mathjax" / "tex-svg-full.js").stat().st_size > 100_000
    for r in built:
        assert (out / "docs" / r.part / r.path.name).is_file()


# The mkdocs hooks


NBCONVERT_HEAD = """<p>x</p>
    <!-- Load mathjax -->
    <script src="mathjax-from-site"> </script>
    <!-- MathJax configuration -->
    <script type="text/x-mathjax-config">
    init_mathjax = function() {};
    </script>
    <!-- End of mathjax configuration -->
<script type="module">
  document.addEventListener("DOMContentLoaded", async () => {
    const mermaid = (await import("https://cdnjs.cloudflare.com/ajax/libs/mermaid/11.10.0/mermaid.esm.min.mjs")).default;
  });
</script>
<script src="../../assets/mathjax/tex-svg-full.js"></script>"""


def test_hook_strips_the_cdn_scripts():
    assert site_test.external_refs(NBCONVERT_HEAD)  # the browser test's static check sees the CDN import
    out = site_hooks.strip_cdn(NBCONVERT_HEAD)
    assert "mathjax-from-site" not in out and "cdnjs" not in out and "x-mathjax-config" not in out
    assert '<script src="../../assets/mathjax/tex-svg-full.js"></script>' in out and "<p>x</p>" in out
    assert site_test.external_refs(out) == []


def test_hook_points_the_contents_at_the_headings():
    html = (
        '<h1 id="a-title">A title<a class="anchor-link" href="#a-title">¶</a></h1>'
        '<h2 id="">中文速览<a class="anchor-link" href="#">¶</a></h2>'
        '<h3 id="1-scores-depend-on-m-n">1. Scores depend on $m-n$</h3>'
    )
    items = [SimpleNamespace(id="a-title", children=[]), SimpleNamespace(id="_1", children=[])]
    items[1].children = [SimpleNamespace(id="1-scores-depend-on", children=[])]
    out = site_hooks.align_toc(html, site_hooks.flatten(items))
    assert '<h2 id="_1">中文速览<a class="anchor-link" href="#_1">' in out
    assert [i.id for i in site_hooks.flatten(items)] == ["a-title", "_1", "1-scores-depend-on-m-n"]
    # a page whose contents do not pair with its headings is left alone
    assert site_hooks.align_toc(html, items[:1]) == html


# The browser test's static parts


def test_external_refs():
    assert site_test.external_refs('<script src="https://cdn.example/x.js"></script>')
    assert site_test.external_refs('<link rel="stylesheet" href="//fonts.example/css">')
    assert site_test.external_refs("@import url('https://fonts.example/a.css');")
    assert site_test.external_refs("src: url(https://fonts.example/a.woff2)")
    assert site_test.external_refs('<img src="https://colab.research.google.com/assets/colab-badge.svg">')
    assert site_test.external_refs('<a href="https://arxiv.org/abs/2104.09864">RoFormer</a>') == []
    assert (
        site_test.external_refs('<script src="../assets/x.js"></script><img src="data:image/png;base64,AA">')
        == []
    )


def test_raw_math_pattern():
    raw = site_test.RAW_MATH
    for text in ("see $$x^2$$", r"where \(a\)", r"\[a\]", r"$\theta_i$ rotates", r"\begin{aligned}"):
        assert raw.search(text), text
    for text in ("costs 5 dollars", "a $ sign alone", "x = 2"):
        assert not raw.search(text), text


def test_site_pages_and_targets(tmp_path):
    (tmp_path / "vlm" / "V6_x").mkdir(parents=True)
    for f in ("index.html", "404.html", "vlm/V6_x/index.html", "assets/a.html"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text('<h2 id="tldr">x</h2>', encoding="utf-8")
    assert sorted(site_test.site_pages(tmp_path)) == ["/", "/404.html", "/vlm/V6_x/"]
    assert site_test.target_file(tmp_path, "/vlm/V6_x/") == tmp_path / "vlm" / "V6_x" / "index.html"
    assert site_test.target_file(tmp_path, "/vlm/V7_x/") is None
    assert "tldr" in site_test.ids_in(tmp_path / "index.html")
    check = site_test.Checks()
    (tmp_path / "assets" / "x.css").write_text("@import url(https://fonts.example/a.css);", encoding="utf-8")
    assert site_test.static_checks(tmp_path, check) == 5 and len(check.failures) == 1
