#!/usr/bin/env bash
# Validates the SAM template (default: template.yaml at the repo root; or the
# files given) with cfn-lint from npm, extended in lint-template.js with the
# SAM features its bundled model lacks. Prints each problem and exits non-zero
# if any template is invalid.
#
# Needs node and npm (Debian: apt-get install nodejs npm). The validator is
# installed into infra/ci/node_modules from the committed package-lock.json
# with `npm ci`, and only again when the lock file changes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "lint-template: $tool not found (Debian: apt-get install nodejs npm)" >&2
    exit 2
  fi
done

stamp="$here/node_modules/.lint-template-lock.sha256"
want=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "lint-template: installing the validator (npm ci)" >&2
  # --ignore-scripts: no dependency needs an install script (core-js's only
  # prints a banner).
  npm ci --prefix "$here" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi

if [[ $# -eq 0 ]]; then
  set -- "$root/template.yaml"
fi
status=0
# The alarm checks' own tests (check-alarms.test.js).
node --test "$here/check-alarms.test.js" >/dev/null || { echo "lint-template: check-alarms.test.js failed (node --test infra/ci/check-alarms.test.js)" >&2; status=1; }
for template in "$@"; do
  node "$here/lint-template.js" "$template" || status=1
done
exit "$status"
