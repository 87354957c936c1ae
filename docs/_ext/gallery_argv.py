"""sphinx-gallery hook: the command line each gallery example runs with.

The examples are scripts with a ``--quick`` mode (what the test suite runs). At a docs build they
run quick, and their PNG goes to a scratch file, never over the full run's plot committed in
``examples/``; the figure stays open, so sphinx-gallery's matplotlib scraper puts it on the page.
"""

from __future__ import annotations

import os
import tempfile

_SCRATCH = os.path.join(tempfile.gettempdir(), "minimalsgd-docs-gallery")


def reset_argv(gallery_conf: dict, script_vars: dict) -> list[str]:
    name = os.path.basename(script_vars["src_file"])
    os.makedirs(_SCRATCH, exist_ok=True)
    png = os.path.join(_SCRATCH, name.replace(".py", ".png"))
    if name == "bf16_rounding.py":
        return ["--quick", "--plot", png]
    if name == "notebook_comparison.py":
        return ["--quick", "--out", png]
    return []
