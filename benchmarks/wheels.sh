#!/usr/bin/env bash
# Download the peers that benchmarks/compare_peers.py compares against, and the one light dependency
# their landscape code needs beyond torch, transformers, numpy and tqdm, into .whl/ (git-ignored), for
# a machine without PyPI access (carry .whl/ there). Install them there WITHOUT dependencies, so that
# nothing replaces torch:
#
#     python3 -m pip install --no-deps .whl/*.whl
#
# (add --ignore-requires-python on Python >= 3.13: landscaper and pylandscape declare <3.13).
#
# What each peer needs (Requires-Dist), and what the benchmark actually imports:
#   loss-landscapes 3.0.6  numpy                                   -> nothing more
#   landscaper 1.3.1       gudhi, matplotlib, pandas, topopy, treelib, coloraide, tqdm, drawsvg
#                          -> only landscaper.compute is imported (numpy, torch, tqdm); the package
#                             __init__ pulls the topology/plotting stack (topopy needs numpy<2, nglpy)
#   nngeom 0.2.0           numpy (torch, matplotlib optional)      -> nothing more
#   pylandscape 0.1.3      torch==2.10, torchvision, brevitas, pyhessian, scipy, ipykernel, pytest, tqdm
#                          -> only pylandscape.surface is imported: needs PyHessian 0.1 (pure Python);
#                             brevitas (numpy<=1.26.4) is only for mode connectivity
#   Li et al. 2018         not on PyPI: a clone of github.com/tomgoldstein/loss-landscape, passed with
#                          --li-repo; h5py and its CIFAR-10 model_loader (torchvision) are not needed
#
# Usage: benchmarks/wheels.sh   (PY_VERSION=3.11 benchmarks/wheels.sh for another target Python)
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION="${PY_VERSION:-3.12}"
WHEELS=(
    "loss-landscapes==3.0.6"
    "landscaper==1.3.1"
    "nngeom==0.2.0"
    "pylandscape==0.1.3"
    "PyHessian==0.1"
)

mkdir -p .whl
for spec in "${WHEELS[@]}"; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$spec"
done

echo
ls -l .whl/*.whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total: ${total} bytes"
if [ "$total" -ge $((40 * 1024 * 1024)) ]; then
    echo "error: the wheels exceed 40 MiB" >&2
    exit 1
fi
