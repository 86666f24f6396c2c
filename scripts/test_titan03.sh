#!/usr/bin/env bash
# The TorchTitan 0.3 half of the test command (README; .ci/run): after the suite ran under TorchTitan 0.2.2 in .venv,
# tests/titan03 and the composition matrix run under TorchTitan 0.3.0 in .venv03. .venv03 sees .venv's packages
# (torch, triton, datasets, this repo's editable install, pytest, ...) behind its own, so only TorchTitan 0.3 and what
# it adds (tyro, spmd_types, ...) are installed into it: seconds instead of the minutes a second torch install takes
# on CI's 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv03
base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$(.venv03/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$base')" > "$own/_motif_titan_base_venv.pth"
. .venv03/bin/activate
pip install -q 'torchtitan==0.3.0'
python -c 'import torchtitan, motif_titan.titan_version as v; assert v.TORCHTITAN_03, v.TORCHTITAN_VERSION'
python -m pytest -q tests/titan03 tests/integration/test_composition_matrix.py
