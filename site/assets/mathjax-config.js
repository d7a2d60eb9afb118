// MathJax 3 (served from the site: assets/mathjax/) typesets the notebooks' $...$ and $$...$$ and the
// Markdown pages' arithmatex spans. Code and outputs (pre, code) are skipped by MathJax's defaults.
window.MathJax = {
  tex: {
    inlineMath: [["$", "$"], ["\\(", "\\)"]],
    displayMath: [["$$", "$$"], ["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams",
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
    processHtmlClass: "tex2jax_process|arithmatex",
    // No menu: it would offer to load speech and other components on demand.
    enableMenu: false,
  },
  svg: { fontCache: "global" },
};
