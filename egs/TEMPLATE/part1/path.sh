# Environment for the recipes: the repository's virtualenv, its tools and a C locale for sorting.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export MAIN_ROOT
if [ -f "${MAIN_ROOT}/tools/activate.sh" ]; then
  # shellcheck disable=SC1091
  . "${MAIN_ROOT}/tools/activate.sh"
fi
export PATH="${MAIN_ROOT}/utils:${PATH}"
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
