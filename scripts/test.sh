#!/usr/bin/env bash
# The test command (README.md, .ci/run): the Go tests, then the Python SDK's pytest suite,
# both against the real Docker engine and the sandboxd binary built from this tree.
# Needs Debian's python3-pytest for /usr/bin/python3 (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

go test -race -count=1 ./...
/usr/bin/python3 -m pytest -q -p no:cacheprovider sdk/python
