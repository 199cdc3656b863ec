"""mkdocs hooks: executed tutorials, API pages generated from the package layout, optional feature pages, math.

- ``on_config``: drops from the nav the feature pages that do not exist (yet), and fills the "API reference"
  section with one page per public package.
- ``on_files``: runs every script in docs/tutorials/ and docs/howto/ (docs/build_tutorials.py) and adds its Markdown page and
  figures to the site; writes the API pages (``::: nemic.<package>.<module>`` for mkdocstrings).
- ``on_page_content``: turns the LaTeX that ``pymdownx.arithmatex`` marks into MathML (latex2mathml), which
  browsers render natively, so the site needs no JavaScript and no network for math, at build or view time.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from latex2mathml.converter import convert as latex_to_mathml
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import build_tutorials  # noqa: E402

DOCS = Path(__file__).parent
SRC = DOCS.parent / "src" / "nemic"
EXECUTED = ("tutorials/", "howto/")          # folders whose .py scripts are run and become pages
API_PACKAGES = ("core", "models", "processes", "metrics", "train", "nn", "io", "data")
# modules whose code is being written; their pages join the reference when they land (see tests/test_docstrings.py)
API_SKIP = ("nemic.models.atmosphere", "nemic.parallel", "nemic.nn.flow", "nemic.nn.column",
            "nemic.processes.qg_stochastic")


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
    return (DOCS / page).exists() or (page.startswith(EXECUTED) and (DOCS / page).with_suffix(".py").exists())


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
    for script in build_tutorials.scripts():
        sub = script.parent.name
        folder, outputs = build_tutorials.run_cached(script)
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


def on_page_content(content, page, config, files):
    content = _BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block")}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), content)
