#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/package/conan/check.sh <work dir>: `conan create` of this checkout with Debian's packages as
# [platform_requires] (debian12.profile), which builds and runs test_package/ (the consumer of
# tests/package). Conan 2 comes from PyPI into a virtual environment under <work dir>, with its own
# CONAN_HOME there; no remote is contacted (-nr). Exit 77 (skipped, with a message) when Conan
# cannot be installed.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/../../.." && pwd)
work=$(mkdir -p "$1" && cd "$1" && pwd)
conan=$work/venv/bin/conan
if [ ! -x "$conan" ]; then
  if ! { python3 -m venv "$work/venv" && "$work/venv/bin/pip" install --quiet 'conan>=2,<3'; }; then
    echo "recpipe: SKIPPED: could not install Conan 2 from PyPI (no network?); the Conan package is not tested"
    rm -rf "$work/venv"
    exit 77
  fi
fi
export CONAN_HOME=$work/home
[ -f "$CONAN_HOME/profiles/default" ] || "$conan" profile detect >/dev/null
cd "$source_dir"
"$conan" create . -pr:h tests/package/conan/debian12.profile -pr:b default --build=missing -nr
