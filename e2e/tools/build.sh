#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from this tools module into a cache
# outside the clone, keyed by the module's content, and prints the folder.
# A cold kube-apiserver build takes ~15 minutes on 2 cores: progress goes to
# stderr (package names as they compile, and a heartbeat) so it is never silent.
#
# Arguments name other components to build instead, into a folder of their
# own (so the test harness's binaries never wait for them): `build.sh
# kube-proxy` is what `make bench-kube-proxy` runs herald-agent against.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.37.2
cache_root=${HERALD_CACHE:-$HOME/.cache/herald}

declare -A packages=(
	[etcd]=./etcd
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
)
components=("$@")
if [[ ${#components[@]} -eq 0 ]]; then
	components=(etcd kubectl kube-apiserver)
fi
for name in "${components[@]}"; do
	if [[ -z "${packages[$name]:-}" ]]; then
		echo "tools: unknown component $name (known: ${!packages[*]})" >&2
		exit 2
	fi
done

key=$(cd "$here" && cat go.mod go.sum tools.go etcd/main.go build.sh | { cat; go version; echo "${components[*]}"; } | sha256sum | cut -c1-16)
out="$cache_root/k8s/$k8s_version/$key"
missing=0
for name in "${components[@]}"; do
	[[ -x "$out/$name" ]] || missing=1
done
if [[ $missing -eq 0 ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache_root/k8s/$k8s_version"
staging=$(mktemp -d "$cache_root/k8s/$k8s_version/.build-XXXXXX")
trap 'rm -rf "$staging"; [[ -n "${beat:-}" ]] && kill "$beat" 2>/dev/null || true' EXIT

pkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in $pkg $cpkg; do
	ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=37"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
done

start=$SECONDS
( while sleep 30; do echo "tools: still building ($((SECONDS - start)) s elapsed; a cold build takes ~15 min)" >&2; done ) &
beat=$!

cd "$here"
for name in "${components[@]}"; do
	echo "tools: building $name" >&2
	t0=$SECONDS
	log="$staging/$name.log"
	if ! go build -v -trimpath -ldflags "$ldflags" -o "$staging/$name" "${packages[$name]}" 2> >(tee "$log" |
		awk '{ n++; if (n % 50 == 0) printf "tools:   %d packages compiled (%s)\n", n, $0 > "/dev/stderr" }'); then
		echo "tools: building $name failed:" >&2
		grep -v '^[a-z0-9./_-]*$' "$log" | tail -n 40 >&2
		exit 1
	fi
	echo "tools: built $name in $((SECONDS - t0)) s" >&2
done

rm -f "$staging"/*.log
rm -rf "$out"
mv "$staging" "$out"
echo "$out"
