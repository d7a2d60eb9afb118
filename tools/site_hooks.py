"""mkdocs hooks for the course site (named in the mkdocs.yml that tools/site.py writes).

- nbconvert's notebook template loads MathJax 2 and Mermaid from a CDN; the site loads its own MathJax 3
  from itself (extra_javascript) and has no Mermaid cells, so ``on_post_page`` removes those tags.
- mkdocs-jupyter builds a notebook page's table of contents with Python-Markdown's slugs while nbconvert
  gives the headings its own ids (an empty one for a heading like 中文速览, different ones where a heading
  holds math), so the contents' links miss. ``on_page_content`` pairs the contents with the headings, in
  order, and makes each link point at its heading's id (giving a heading without an id the contents' one).
"""

from __future__ import annotations

import re

# The MathJax 2 tag (its URL is the placeholder custom_mathjax_url in site/mkdocs.yml) and its config.
MATHJAX2 = re.compile(
    r'<!-- Load mathjax -->\s*<script src="mathjax-from-site">\s*</script>.*?<!-- End of mathjax configuration -->',
    re.S,
)
# Any inline module script that imports from a CDN (nbconvert's Mermaid loader).
CDN_MODULE = re.compile(r'<script type="module">(?:(?!</script>).)*?https://cdn[^"]*".*?</script>', re.S)


HEADING = re.compile(r'<h([1-6]) id="([^"]*)">(.*?)</h\1>', re.S)


def flatten(toc) -> list:
    out = []
    for item in toc:
        out.append(item)
        out.extend(flatten(item.children))
    return out


def align_toc(html: str, items: list) -> str:
    """Point the contents ``items`` (in order) at the headings of ``html``; the html with ids filled in."""
    headings = list(HEADING.finditer(html))
    if len(headings) != len(items):
        return html
    used = {m.group(2) for m in headings if m.group(2)}
    parts, last = [], 0
    for m, item in zip(headings, items, strict=True):
        level, hid, inner = m.groups()
        if not hid:
            hid = item.id if item.id and item.id not in used else f"section-{len(used) + 1}"
            used.add(hid)
            inner = inner.replace('class="anchor-link" href="#"', f'class="anchor-link" href="#{hid}"', 1)
        item.id = hid
        parts += [html[last : m.start()], f'<h{level} id="{hid}">{inner}</h{level}>']
        last = m.end()
    return "".join(parts) + html[last:]


def on_page_content(html: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs hook signature)
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    return align_toc(html, flatten(page.toc))


def strip_cdn(html: str) -> str:
    return CDN_MODULE.sub("", MATHJAX2.sub("", html))


def on_post_page(output: str, page, config) -> str:  # noqa: ARG001 (mkdocs hook signature)
    return strip_cdn(output)
