#!/usr/bin/env bash
# The documentation in CI: the `docs` extra's requirements in the current environment (torch==2.13.0
# only: the CPU wheel on these machines) — only those when minimalsgd is installed already (as
# tests/run_all.sh leaves it in CI: rebuilding it would cost minutes; docs/conf.py stops the build
# when the installed package is not this checkout's), else `pip install ".[docs]"` — then the HTML
# with warnings as errors
# and nitpicky cross-references (the gallery's examples run in their --quick modes), checks that
# the pages and the gallery's pictures are there, then runs the code of the guides and the
# docstring examples under Sphinx's doctest builder (the same doctrees: nothing is read twice).
# Run it alone from a venv, or through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
docs_requirements() {  # the `docs` extra of pyproject.toml, one requirement a line
  python - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["docs"]))
PY
}
if python -c "import minimalsgd, tomllib" 2>/dev/null; then
  mapfile -t reqs < <(docs_requirements)
  python -m pip install "${reqs[@]}"
else
  python -m pip install ".[docs]"
fi
t_install=$((SECONDS - start))
rm -rf docs/_build docs/auto_examples docs/sg_execution_times.rst
python -m sphinx -W -n --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
t_html=$((SECONDS - start))
# A script that ends the process (SystemExit) would end the build early with status 0: check the
# pages that come last and the pictures the examples draw.
for f in index reference/minimalsgd reference/torch reference/distributed reference/cpp guide/performance \
         auto_examples/bf16_rounding auto_examples/notebook_comparison auto_examples/mpi_train; do
  test -s "docs/_build/html/$f.html" || { echo "docs: missing docs/_build/html/$f.html" >&2; exit 1; }
done
for f in sphx_glr_bf16_rounding_001.png sphx_glr_notebook_comparison_001.png; do
  test -s "docs/_build/html/_images/$f" || { echo "docs: the gallery drew no docs/_build/html/_images/$f" >&2; exit 1; }
done
python -m sphinx -W -n --keep-going -b doctest -d docs/_build/doctrees docs docs/_build/doctest
t_doctest=$((SECONDS - start))
echo "docs: seconds (cumulative): install $t_install, html $t_html, doctest $t_doctest"
