"""Open every page of the built site (build/site) in headless Chromium and check what a reader sees.

make site-deps   # once: Debian's chromium and fonts-noto-cjk (Playwright drives them; no browser download)
make site        # build the site
make site-test   # this script

The site is served on localhost from a thread; every request for another host is refused and counted as a
failure. Per page, at desktop width (1280 px) and again at phone width (390 px):

- no console error and no uncaught exception, no failed request, no HTTP error;
- every equation typeset by MathJax: no raw ``$$``, ``\\(``, ``\\[`` or ``$...$`` left in the visible text
  (code and outputs excluded), no MathJax error node;
- every image loaded (naturalWidth > 0);
- every internal link resolves to a file of the site and every ``#anchor`` to an id on its page;
- no horizontal scroll at phone width (scrollWidth <= innerWidth + 1);
- Chinese text drawn with real glyphs: for each element holding CJK characters, Chromium's own report of
  the fonts that rendered its text (DevTools ``CSS.getPlatformFontsForNode``) must show a CJK font drawing
  at least as many glyphs as the element has CJK characters; and, as a control, a character no font has
  (U+10FFFD) must be reported as drawn without a CJK font (so the check can fail).

The search box is tried once (a query must list results). Screenshots of three pages go to
build/site-screenshots/. Prints the number of pages and checks; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
RAW_MATH = re.compile(r"\$\$|\\\(|\\\[|\\begin\{|(?<![\\\w])\$[^\s$][^$\n]{0,200}?[^\s\\$]\$")
ID_ATTR = re.compile(r"""\b(?:id|name)=["']?([^"'\s>]+)""")

# In the page: the visible text without code, outputs, scripts and typeset math.
VISIBLE_TEXT_JS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, textarea, mjx-container, .md-search, svg').forEach(e => e.remove());
  return body.innerText;
}"""
FACTS_JS = """() => {
  const links = [];
  document.querySelectorAll('a').forEach(a => {
    const raw = a.getAttribute('href') || a.getAttribute('xlink:href');
    if (raw) links.push(new URL(raw, document.baseURI).href);
  });
  const images = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  return {
    links, images,
    equations: document.querySelectorAll('mjx-container').length,
    mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error], [data-mml-node="merror"]').length,
    scrollWidth: document.scrollingElement.scrollWidth, innerWidth: window.innerWidth,
  };
}"""
# Mark the elements whose own text nodes hold CJK characters (at most 40 per page), with that count.
MARK_CJK_JS = """(max) => {
  const re = /[\\u3400-\\u4dbf\\u4e00-\\u9fff]/g;
  const seen = new Set(); let n = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode() && n < max) {
    const el = walker.currentNode.parentElement;
    if (!el || seen.has(el) || el.closest('script, style, .md-search')) continue;
    const own = [...el.childNodes].filter(c => c.nodeType === 3).map(c => c.data).join('');
    const count = (own.match(re) || []).length;
    if (!count || !el.getClientRects().length) continue;
    seen.add(el); el.setAttribute('data-cjk-probe', String(count)); n++;
  }
  const ctl = document.createElement('span');
  ctl.textContent = '\\u{10FFFD}\\u{10FFFD}'; ctl.setAttribute('data-cjk-control', '1');
  document.body.appendChild(ctl);
  return n;
}"""


# Static check of the built files: what a page or stylesheet would load from another host.
EXTERNAL_REFS = [
    re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^\"'\s>]+", re.I),
    re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^\"'\s>]+[^>]*>", re.I),
    re.compile(r"<(?:img|iframe|source|video|audio|embed)\b[^>]*\bsrc=[\"']?(?:https?:)?//[^\"'\s>]+", re.I),
    re.compile(r"@import\s+(?:url\()?[\"']?(?:https?:)?//[^\"')\s]+", re.I),
    re.compile(r"url\(\s*[\"']?(?:https?:)?//[^\"')\s]+", re.I),
    re.compile(r"import\(\s*[\"'](?:https?:)?//[^\"']+", re.I),
]


def external_refs(text: str) -> list[str]:
    """Scripts, stylesheets, fonts, images or imports that ``text`` (HTML or CSS) would fetch from
    another host. Plain ``<a href>`` links to other sites are fine; ``<link rel=canonical>`` is not used."""
    found = []
    for pattern in EXTERNAL_REFS:
        found += [m.group(0)[:160] for m in pattern.finditer(text)]
    return found


def static_checks(root: Path, check: Checks) -> int:
    """``external_refs`` over every HTML, CSS and JS file of the site; the number of files read."""
    files = [f for f in root.rglob("*") if f.suffix in (".html", ".css", ".js") and f.is_file()]
    for f in files:
        refs = external_refs(f.read_text(encoding="utf-8", errors="replace"))
        check(not refs, f"{f.relative_to(root)}: loads from another host: {refs[:3]}")
    return len(files)


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ARG002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def site_pages(root: Path) -> list[str]:
    """Every HTML page of the site, as URL paths."""
    pages = []
    for f in sorted(root.rglob("*.html")):
        rel = f.relative_to(root).as_posix()
        if rel.startswith("assets/"):
            continue
        pages.append("/" + (rel[: -len("index.html")] if rel.endswith("index.html") else rel))
    return pages


def target_file(root: Path, path: str) -> Path | None:
    f = root / unquote(path).lstrip("/")
    if f.is_dir():
        f = f / "index.html"
    return f if f.is_file() else None


@functools.cache
def ids_in(file: Path) -> frozenset[str]:
    return frozenset(ID_ATTR.findall(file.read_text(encoding="utf-8", errors="replace")))


def local_only(base: str, problems: list[str]):
    """A route handler that lets requests for the site through and refuses (and records) any other."""

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"external request: {r.request.url}")
            r.abort()

    return route


class Checks:
    def __init__(self) -> None:
        self.count = 0
        self.failures: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        self.count += 1
        if not ok:
            self.failures.append(what)


def check_fonts(page, cdp, where: str, check: Checks) -> int:
    """The CJK glyph check (see the module docstring); the number of elements probed."""
    n = page.evaluate(MARK_CJK_JS, 40)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    doc = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    for attr in ("data-cjk-probe", "data-cjk-control"):
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": doc, "selector": f"[{attr}]"})["nodeIds"]:
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
            cjk_glyphs = sum(f["glyphCount"] for f in fonts if "CJK" in f["familyName"])
            if attr == "data-cjk-control":
                check(cjk_glyphs == 0, f"{where}: control U+10FFFD reported as drawn by a CJK font: {fonts}")
                continue
            values = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]
            wanted = int(values[values.index(attr) + 1])
            names = ", ".join(f"{f['familyName']} ({f['glyphCount']})" for f in fonts)
            check(
                cjk_glyphs >= wanted,
                f"{where}: {wanted} CJK characters but CJK fonts drew {cjk_glyphs}: {names}",
            )
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check every page of build/site in headless Chromium.")
    parser.add_argument("--site", type=Path, default=SITE)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    root = args.site.resolve()
    if not (root / "index.html").is_file():
        print(f"{root}/index.html not found: run make site first")
        return 2
    if not Path(args.chromium).exists():
        print(f"{args.chromium} not found: run make site-deps first")
        return 2
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    server, base = serve(root)
    pages = site_pages(root)
    check = Checks()
    SHOTS.mkdir(parents=True, exist_ok=True)
    readings = [p for p in pages if p.count("/") == 3]
    shots = {("/", "desktop"): "home.png"}
    if readings:
        shots[(readings[0], "desktop")] = "reading-desktop.png"
        shots[(readings[-1], "phone")] = "reading-phone.png"
    probed = equations = 0
    scanned = static_checks(root, check)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
        for width, height, label in ((1280, 900, "desktop"), (390, 844, "phone")):
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            for path in pages:
                where = f"{path} ({label})"
                page = context.new_page()
                problems: list[str] = []
                page.on("console", lambda m, p=problems: m.type == "error" and p.append(f"console: {m.text}"))
                page.on("pageerror", lambda e, p=problems: p.append(f"exception: {e}"))
                page.on(
                    "requestfailed", lambda r, p=problems: p.append(f"request failed: {r.url} {r.failure}")
                )
                page.on(
                    "response",
                    lambda r, p=problems: r.status >= 400 and p.append(f"HTTP {r.status}: {r.url}"),
                )

                page.route("**/*", local_only(base, problems))
                page.goto(base + path, wait_until="load")
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
                page.evaluate("() => MathJax.startup.promise")
                page.evaluate("() => document.fonts.ready.then(() => true)")
                facts = page.evaluate(FACTS_JS)
                text = page.evaluate(VISIBLE_TEXT_JS)
                raw = RAW_MATH.findall(text)
                check(not raw, f"{where}: raw math in the text: {raw[:5]}")
                check(facts["mathErrors"] == 0, f"{where}: {facts['mathErrors']} MathJax error nodes")
                for img in facts["images"]:
                    check(img["ok"], f"{where}: image not loaded: {img['src'][:120]}")
                for link in sorted(set(facts["links"])):
                    parts = urlsplit(link)
                    if not link.startswith(base):
                        check(parts.scheme in ("http", "https", "mailto"), f"{where}: odd link {link}")
                        continue
                    f = target_file(root, parts.path)
                    check(f is not None, f"{where}: link to a missing file: {parts.path}")
                    if f is not None and parts.fragment and f.suffix == ".html":
                        check(
                            unquote(parts.fragment) in ids_in(f),
                            f"{where}: no anchor #{parts.fragment} in {parts.path}",
                        )
                if label == "phone":
                    check(
                        facts["scrollWidth"] <= facts["innerWidth"] + 1,
                        f"{where}: scrolls sideways ({facts['scrollWidth']} > {facts['innerWidth']} px)",
                    )
                else:
                    equations += facts["equations"]
                    probed += check_fonts(page, page.context.new_cdp_session(page), where, check)
                if (path, label) in shots:
                    page.screenshot(path=str(SHOTS / shots[(path, label)]), full_page=False)
                if path == "/" and label == "desktop":
                    page.fill("input.md-search__input", "rotary")
                    try:
                        page.wait_for_selector(".md-search-result__item", timeout=15000)
                        found = page.locator(".md-search-result__item").count()
                    except Exception:  # noqa: BLE001 (a timeout is the failure being counted)
                        found = 0
                    check(found > 0, "/: the search for 'rotary' lists no result")
                    page.keyboard.press("Escape")
                check(not problems, f"{where}: " + "; ".join(problems[:5]))
                page.close()
            context.close()
        browser.close()
    server.shutdown()
    for f in check.failures:
        print(f"FAIL {f}")
    print(
        f"site-test: {scanned} files scanned for external loads, {len(pages)} pages at 2 widths, {equations} equations, {probed} CJK elements probed, "
        f"{check.count} checks, {len(check.failures)} failed, {time.monotonic() - start:.0f} s; "
        f"screenshots in {SHOTS.relative_to(ROOT)}/"
    )
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
