#!/usr/bin/env bash
# Lints the checked-in OpenAPI documents; zero errors required (warnings are printed only).
#
#   openapi/openapi.json      (3.1, served at /api/openapi.json)   Spectral, openapi-spec-validator
#   openapi/openapi-3.0.json  (3.0.3 rendering for APIM import)     Spectral, openapi-spec-validator
#
# Spectral runs the repository's ruleset, .spectral.yaml (spectral:oas plus the OWASP ruleset,
# with every rule switched off justified there); both come from package-lock.json (npm ci).
# openapi-spec-validator (pinned, with its whole environment, by
# scripts/openapi-lint-requirements.txt) validates each document against its own version's
# schema. Both documents must exist (`handler openapi` writes them).
#
# Usage: scripts/lint-openapi.sh
set -euo pipefail
cd "$(dirname "$0")/.."

doc_31=openapi/openapi.json
doc_30=openapi/openapi-3.0.json

scripts/azurite.sh install # npm ci when package-lock.json changed: Azurite and Spectral
. scripts/common.sh
venv=.venv/openapi-lint
pinned_venv "$venv" scripts/openapi-lint-requirements.txt

failed=()
spectral() {
  echo "-- Spectral ($(node_modules/.bin/spectral --version)): $1"
  node_modules/.bin/spectral lint --ruleset .spectral.yaml --fail-severity error --format stylish "$1" ||
    failed+=("Spectral $1")
}
spec_validator() { # file, OpenAPI version
  echo "-- openapi-spec-validator ($("$venv/bin/openapi-spec-validator" --version 2>&1)): $1 as OpenAPI $2"
  "$venv/bin/openapi-spec-validator" --schema "$2" --validation-errors all "$1" ||
    failed+=("openapi-spec-validator $1")
}

spectral "$doc_31"
spec_validator "$doc_31" 3.1

spectral "$doc_30"
spec_validator "$doc_30" 3.0

if [ "${#failed[@]}" -gt 0 ]; then
  echo
  echo "OpenAPI lint failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo
echo "OpenAPI lint: no errors"
