#!/usr/bin/env bash
# Regenerates everything derived from the kubebuilder markers in
# bare-metal/api/...: zz_generated.deepcopy.go in each API package and the
# CRD manifests in charts/herald/crds. controller-gen comes from the Go module
# proxy at a pinned version (go run caches the built binary).
#
#   bare-metal/api/generate.sh          regenerate
#   bare-metal/api/generate.sh --check  regenerate, then fail if a generated
#                                       file differs from the committed one
set -euo pipefail

controller_gen=sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

crds=charts/herald/crds
mkdir -p "$crds"
# Remove what controller-gen writes so a renamed or deleted type leaves no
# stale file behind.
rm -f bare-metal/api/*/zz_generated.deepcopy.go "$crds"/herald.dev_*.yaml

go run "$controller_gen" \
	object \
	crd \
	paths=./bare-metal/api/... \
	output:crd:artifacts:config="$crds"

if [[ "${1:-}" == "--check" ]]; then
	paths=('bare-metal/api/*/zz_generated.deepcopy.go' "$crds")
	if ! git diff --quiet -- "${paths[@]}" || [[ -n "$(git ls-files --others --exclude-standard -- "${paths[@]}")" ]]; then
		echo "generate.sh: generated files are out of date; run bare-metal/api/generate.sh and commit:" >&2
		git status --short -- "${paths[@]}" >&2
		exit 1
	fi
	echo "generate.sh: generated files are up to date"
fi
