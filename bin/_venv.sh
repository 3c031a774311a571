# Shared by bin/demo and bin/test: make sure .venv exists and contains prepflow with the
# given extras. Reinstalls only when pyproject.toml or the extras changed since the last install.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "error: prepflow needs Python 3.11 or newer; install it and run this again" >&2
  return 1
}

ensure_venv() {
  local extras="$1"
  if [[ ! -x "$venv/bin/python" ]]; then
    local python
    python="$(find_python)"
    echo "creating $venv with $python" >&2
    "$python" -m venv "$venv"
  fi
  local spec="."
  [[ -n "$extras" ]] && spec=".[$extras]"
  local stamp
  stamp="$venv/.installed-$(cat "$repo_root/pyproject.toml" <(echo "$extras") | sha256sum | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    echo "installing prepflow ($spec) into $venv; pip's output goes to $venv/pip-install.log" >&2
    local log="$venv/pip-install.log"
    if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
      (cd "$repo_root" && "$venv/bin/python" -m pip install --disable-pip-version-check -e "$spec")
    } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "error: installing prepflow failed; the whole pip output is in $log" >&2
      return 1
    fi
    touch "$stamp"
  fi
}

# The dashboard's browser tests drive Debian's chromium through Playwright (tests/ui). Install
# it when it is missing and this runs as root with apt-get. Otherwise those tests are skipped
# with the reason. When chromium is there, this costs one `command -v`.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: chromium is not installed (needs root and apt-get); the browser tests will skip" >&2
    return 0
  fi
  local log="$venv/apt-chromium.log"
  echo "installing chromium with apt-get for the browser tests; output goes to $log" >&2
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
    >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "warning: installing chromium failed (see $log); the browser tests will skip" >&2
  fi
}
