"""The runner that executes the documentation's tutorials: outputs and figures land on the page in order, and a
failing cell fails the build with the cell's number (the whole site is built and every tutorial run by
``make docs`` in CI; this test checks the runner itself on a two-cell script)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs"))
import build_tutorials  # noqa: E402

SCRIPT = '''# %% [markdown]
# # A page
#
# Some prose.

# %%
import matplotlib.pyplot as plt
x = 6 * 7
print("the answer is", x)

# %%
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
'''


def test_outputs_and_figures_in_order(tmp_path):
    script = tmp_path / "page.py"
    script.write_text(SCRIPT)
    outputs = build_tutorials.execute(script, tmp_path / "out")
    assert [o["stdout"] for o in outputs] == ["the answer is 42\n", ""]
    assert outputs[1]["figures"] == ["fig01.png"]
    assert (tmp_path / "out" / "fig01.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = build_tutorials.to_markdown(script, outputs, "page_files")
    i_prose, i_code, i_out, i_fig = (page.index(s) for s in ("Some prose.", "x = 6 * 7", "the answer is 42",
                                                             "![figure](page_files/fig01.png)"))
    assert i_prose < i_code < i_out < i_fig


def test_a_failing_cell_fails_with_its_number(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(SCRIPT + "\n# %%\nassert x == 41, 'wrong answer'\n")
    with pytest.raises(RuntimeError, match=r"(?s)bad\.py failed.*cell 3 failed.*wrong answer"):
        build_tutorials.execute(script, tmp_path / "out")
