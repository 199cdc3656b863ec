"""mkdocs hooks: executed tutorials, API pages generated from the package layout, optional feature pages, math.

- ``on_config``: drops from the nav the feature pages that do not exist (yet), and fills the "API reference"
  section with one page per public package.
- ``on_files``: runs every script in docs/tutorials/ and docs/howto/ (docs/build_tutorials.py) and adds its Markdown page and
  figures to the site; writes the API pages (``::: nemic.<package>.<module>`` for mkdocstrings).
- ``on_page_markdown``: links to feature pages that have not landed yet (``OPTIONAL_PAGES``) become plain text.
- ``on_page_content``: drops Sphinx roles (``:func:``) before code and reST's escaped spaces after it in docstrings, and turns the LaTeX that ``pymdownx.arithmatex`` marks (and reST's ``.. math::`` and ``:math:`` in docstrings) into MathML (latex2mathml), which
  browsers render natively, so the site needs no JavaScript and no network for math, at build or view time.
"""

from __future__ import annotations

import html
import logging
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from latex2mathml.converter import convert as latex_to_mathml
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import build_tutorials  # noqa: E402

LOG = logging.getLogger("mkdocs.hooks.nemic")
DOCS = Path(__file__).parent
SRC = DOCS.parent / "src" / "nemic"
EXECUTED = ("tutorials/", "howto/")          # folders whose .py scripts are run and become pages
# NEMIC_DOCS_SKIP_EXECUTION=1: leave the executed pages out (a quick, non-strict preview of the prose pages only)
SKIP_EXECUTION = os.environ.get("NEMIC_DOCS_SKIP_EXECUTION") == "1"
# how many scripts run at once (NEMIC_DOCS_JOBS; default 2)
JOBS = int(os.environ.get("NEMIC_DOCS_JOBS", "2"))
API_PACKAGES = ("core", "models", "processes", "metrics", "train", "nn", "parallel", "io", "data")
# modules left out of the reference (none at present; see tests/test_docstrings.py)
API_SKIP: tuple[str, ...] = ()


def _api_modules(package: str) -> list[str]:
    mods = []
    for path in sorted((SRC / package).rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if any(p.startswith("_") for p in parts[1:]) or any(name.startswith(s) for s in API_SKIP):
            continue
        mods.append(name)
    return mods


def _prune(nav):
    """The nav without the Markdown pages that are neither in docs/ nor generated."""
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                value = _prune(value)
                if value:
                    out.append({title: value})
            elif _exists(value):
                out.append(item)
        elif _exists(item):
            out.append(item)
    return out


def _exists(page: str) -> bool:
    if page.startswith(("http://", "https://", "api/")):
        return True
    if page.startswith(EXECUTED) and (DOCS / page).with_suffix(".py").exists():
        return not SKIP_EXECUTION
    return (DOCS / page).exists()


def on_config(config):
    nav = _prune(config["nav"])
    api = [{"Overview": "api/index.md"}] + [{f"nemic.{p}": f"api/{p}.md"} for p in API_PACKAGES]
    config["nav"] = [({"API reference": api} if isinstance(i, dict) and "API reference" in i else i) for i in nav]
    return config


def _api_page(package: str) -> str:
    mods = _api_modules(package)
    lines = [f"# nemic.{package}", ""] + [f"- [`{m}`](#{m})" for m in mods[1:]] + [""]
    for i, m in enumerate(mods):
        lines += [f"::: {m}", "    options:", "      heading_level: 2", "      show_root_heading: true",
                  "      show_root_full_path: true"] + (["      members: false"] if i == 0 else []) + [""]
    return "\n".join(lines)


def on_files(files, config):
    for package in API_PACKAGES:
        files.append(File.generated(config, f"api/{package}.md", content=_api_page(package)))
    scripts = [] if SKIP_EXECUTION else build_tutorials.scripts()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:       # each script runs in its own process
        results = list(pool.map(build_tutorials.run_cached, scripts))
    for script, (folder, outputs) in zip(scripts, results):
        sub = script.parent.name
        LOG.info(f"{sub}/{script.name}: {sum(o['seconds'] for o in outputs):.1f} s of cells ({folder.name})")
        fig_dir = f"{script.stem}_files"
        page = build_tutorials.to_markdown(script, outputs, fig_dir)
        files.append(File.generated(config, f"{sub}/{script.stem}.md", content=page))
        for res in outputs:
            for fig in res["figures"]:
                files.append(File.generated(config, f"{sub}/{fig_dir}/{fig}", abs_src_path=str(folder / fig)))
    return files


_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(tex: str, display: str) -> str:
    return latex_to_mathml(html.unescape(tex).strip(), display=display)


# feature pages that land with their features: a link to one that is not there yet stays as plain text
OPTIONAL_PAGES = ("atmosphere.md", "downscaling.md", "scaling.md")


def on_page_markdown(markdown, page, config, files):
    for name in OPTIONAL_PAGES:
        if not (DOCS / name).exists():
            markdown = re.sub(r"\[([^\]]+)\]\((?:\.\./)?" + re.escape(name) + r"(#[^)]*)?\)", r"\1", markdown)
    return markdown


# Sphinx cross-reference roles in docstrings (":func:`~nemic.x.f`") render as their code only
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc|math):(<code>)~?")


# reStructuredText's escaped space after inline code ("``X``\\ s", a plural) renders as "Xs"
_ESCAPED_SPACE = re.compile(r"(</code>)\\ ")


# reStructuredText math in docstrings: ".. math:: TEX" paragraphs and ":math:`TEX`" roles, rendered as MathML
# (left as written if the TeX has been touched by Markdown or cannot be converted)
_RST_BLOCK = re.compile(r"<p>\.\. math::\s*(.*?)</p>", re.S)
_RST_INLINE = re.compile(r":math:<code>(.*?)</code>", re.S)


def _rst_math(m: re.Match, display: str) -> str:
    tex = m.group(1)
    if "<" in tex:
        return m.group(0)
    try:
        out = _mathml(tex, display)
    except Exception:                   # noqa: BLE001 - any TeX latex2mathml cannot read stays as text
        return m.group(0)
    return f'<div class="math">{out}</div>' if display == "block" else out


def on_page_content(content, page, config, files):
    content = _RST_BLOCK.sub(lambda m: _rst_math(m, "block"), content)
    content = _RST_INLINE.sub(lambda m: _rst_math(m, "inline"), content)
    content = _ROLE.sub(r"\1", content)
    content = _ESCAPED_SPACE.sub(r"\1", content)
    content = _BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block")}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), content)
