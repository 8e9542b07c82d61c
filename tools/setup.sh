#!/usr/bin/env bash
# Make a working environment for this repository; safe to run again (each step is skipped
# when already done).
#
#   tools/setup.sh [--extras dev,ja] [--python python3] [--no-system]
#
#  1. Python environment: the active virtualenv if there is one, else <repo>/.venv (created once).
#  2. PyTorch, only if none is importable (a CUDA build a user installed is never replaced):
#     with an NVIDIA GPU the default build; without one a CPU build: a local wheel when pip finds
#     one offline, else the CPU-only index (never the multi-GB CUDA build).
#  3. This package in editable mode with the requested extras.
#  4. The system tools recipes call (espeak-ng, sox, sclite from sctk): installed with apt-get
#     when missing and running as root, else listed for the user to install.
set -euo pipefail

extras=dev
python=python3
system=true
torch_version=2.13.0
torch_cpu_index=https://download.pytorch.org/whl/cpu

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) extras=${2:?--extras needs a value}; shift 2 ;;
    --python) python=${2:?--python needs a value}; shift 2 ;;
    --no-system) system=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; usage >&2; exit 1 ;;
  esac
done

say() { echo "setup.sh: $*"; }
trap 'echo "setup.sh: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# 1. Python environment.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  venv=$VIRTUAL_ENV
  say "using the active virtualenv $venv"
else
  venv=$root/.venv
  if [ -x "$venv/bin/python" ]; then
    say "reusing $venv"
  else
    say "creating $venv with $python"
    "$python" -m venv "$venv"
  fi
fi
py=$venv/bin/python
[ -x "$py" ] || { echo "setup.sh: no python at $py" >&2; exit 1; }
if ! "$py" -m pip --version >/dev/null 2>&1; then
  say "bootstrapping pip"
  "$py" -m ensurepip --upgrade
fi
pip() { "$py" -m pip "$@"; }

# 2. PyTorch.
if version=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
  say "torch $version is already installed; leaving it alone"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "NVIDIA GPU found: installing the default (CUDA) torch build"
  pip install torch
elif pip install --no-index --no-deps "torch==$torch_version" >/dev/null 2>&1; then
  # --no-index: only a wheel found locally (pip's find-links), so nothing large is downloaded;
  # then its small dependencies come from the index as usual.
  pip install "torch==$torch_version"
  say "installed torch $torch_version from a local wheel"
else
  say "no local torch wheel: installing a CPU build from $torch_cpu_index"
  pip install torch --index-url "$torch_cpu_index"
fi

# 3. This package (its requirements accept any torch >= 2.1, so the torch above stays).
spec=$root
[ -n "$extras" ] && spec="$root[$extras]"
say "installing $spec (editable)"
pip install -e "$spec"

# 4. System tools.
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v sclite >/dev/null 2>&1 || [ -x /usr/lib/sctk/bin/sclite ] || missing+=(sctk)
if [ ${#missing[@]} -eq 0 ]; then
  say "system tools present: espeak-ng sox sclite"
elif ! $system; then
  say "skipping system tools (--no-system); missing: ${missing[*]}"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing ${missing[*]} with apt-get"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "please install these system packages: ${missing[*]}" \
    "(Debian/Ubuntu: sudo apt-get install ${missing[*]})"
fi

"$py" -c 'import partlib, torch; print("setup.sh: ok: partlib importable, torch", torch.__version__)'
say "done; recipes activate it with: . tools/activate.sh"
