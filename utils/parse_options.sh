#!/usr/bin/env bash
# Parse command-line options for the script that sources it (". utils/parse_options.sh").
#
#   --foo-bar VALUE  or  --foo_bar VALUE   sets the variable foo_bar, which the script must have
#                                          defined beforehand (an undefined one is an invalid option)
#   --config FILE                          sources FILE first; options on the command line win
#   --help | -h                            prints $help_message and exits 0
#
# A variable whose default is true or false only accepts true or false. Parsing stops at the
# first argument that does not start with "--" (or at "--", which is removed); the remaining
# positional arguments are left in "$@". Kaldi's conventions, usable under "set -euo pipefail".

# --config is accepted by every script.
config=${config:-}

# Source the config files first so that explicit options override them.
__po_args=("$@")
for ((__po_i = 0; __po_i < ${#__po_args[@]}; __po_i++)); do
  case "${__po_args[__po_i]}" in
    --) break ;;
    --config)
      __po_cfg=${__po_args[__po_i + 1]:-}
      if [ -z "$__po_cfg" ] || [ ! -r "$__po_cfg" ]; then
        echo "$0: cannot read config file '$__po_cfg' (given with --config)" >&2
        exit 1
      fi
      # shellcheck disable=SC1090
      . "$__po_cfg"
      __po_i=$((__po_i + 1))
      ;;
    --*) __po_i=$((__po_i + 1)) ;;
    *) break ;;
  esac
done
unset __po_args __po_i __po_cfg

while [ $# -gt 0 ]; do
  case "$1" in
    --help | -h)
      if [ -n "${help_message:-}" ]; then
        printf '%b\n' "$help_message"
      else
        echo "$0: no help message for this script"
      fi
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --*=*)
      echo "$0: options must be given as '--name value', got '$1'" >&2
      exit 1
      ;;
    --*)
      __po_name=${1#--}
      __po_name=${__po_name//-/_}
      if ! [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_name+set}" ]; then
        echo "$0: invalid option $1" >&2
        exit 1
      fi
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      __po_old=${!__po_name}
      if [[ ($__po_old == true || $__po_old == false) && $2 != true && $2 != false ]]; then
        echo "$0: expected \"true\" or \"false\": $1 $2" >&2
        exit 1
      fi
      # printf -v assigns the value verbatim (spaces, quotes, $ and globs stay as given).
      printf -v "$__po_name" '%s' "$2"
      shift 2
      ;;
    *) break ;;
  esac
done
unset __po_name __po_old

# An empty --cmd is nearly always a scripting error ("--cmd $undefined").
if [ -n "${cmd+set}" ] && [ -z "$cmd" ]; then
  echo "$0: empty argument to --cmd option" >&2
  exit 1
fi

true
