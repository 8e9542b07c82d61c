# Source this file (recipes' path.sh does) to use the environment tools/setup.sh made:
#   . tools/activate.sh
# Puts the virtualenv's python first on PATH (the active virtualenv if there is one, else
# <repo>/.venv) and adds sclite from sctk. Works under "set -euo pipefail".

__part_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$__part_root/.venv/bin/python" ]; then
  # Exporting the variables is all "activate" does that scripts need; no prompt changes.
  export VIRTUAL_ENV=$__part_root/.venv
  export PATH=$VIRTUAL_ENV/bin:$PATH
elif [ -z "${VIRTUAL_ENV:-}" ]; then
  echo "tools/activate.sh: no virtualenv at $__part_root/.venv; run tools/setup.sh first" >&2
fi
# Debian's sctk installs sclite outside PATH.
if [ -d /usr/lib/sctk/bin ] && [[ :$PATH: != *:/usr/lib/sctk/bin:* ]]; then
  export PATH=$PATH:/usr/lib/sctk/bin
fi
export PYTHONIOENCODING=UTF-8
unset __part_root
