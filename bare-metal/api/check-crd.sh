#!/usr/bin/env bash
# Checks the generated CRDs against a real kube-apiserver: applies
# charts/herald/crds, then server-side dry-runs every object under
# bare-metal/api/v1alpha1/testdata:
#   valid/    must be accepted;
#   invalid/  must be rejected, with the text of the file's "# expect:" line
#             in the error (so each CEL rule is shown to fire on its own input);
#   gaps/     known gaps: accepted by the CRD today, caught by herald-ccm.
# It then creates one pool for real to show defaults, a status update and the
# printer columns. With --chart it also renders charts/herald with helm,
# dry-runs the result with --validate=strict, applies it, and runs herald-ccm
# (built from this tree) with the chart's args, config and ServiceAccount.
#
#   bare-metal/api/check-crd.sh [--chart] [BIN_DIR]
#
# BIN_DIR holds kube-apiserver, etcd and kubectl v1.37 (default: what
# e2e/tools/build.sh prints, building them if needed). etcd and the
# apiserver run on free 127.0.0.1 ports in a temporary folder and are stopped
# by PID on exit. The last line is "N passed, N failed".
set -euo pipefail

helm=helm.sh/helm/v3/cmd/helm@v3.22.0
root=$(cd "$(dirname "$0")/../.." && pwd)
chart=false
if [[ "${1:-}" == "--chart" ]]; then
	chart=true
	shift
fi
bin=${1:-$("$root/e2e/tools/build.sh")}
for b in etcd kube-apiserver kubectl; do
	[[ -x "$bin/$b" ]] || { echo "check-crd: $bin/$b missing" >&2; exit 2; }
done

tmp=$(mktemp -d)
etcd_pid= apiserver_pid= ccm_pid=
cleanup() {
	for pid in $ccm_pid $apiserver_pid $etcd_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
client_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)

"$bin/etcd" --name check --data-dir "$tmp/etcd" --unsafe-no-fsync --log-level error \
	--listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
	--listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
	--initial-cluster "check=http://127.0.0.1:$peer_port" >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!

openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
token=$(openssl rand -hex 16)
echo "$token,check-admin,check-admin,system:masters" >"$tmp/tokens.csv"

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$client_port" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
	--cert-dir "$tmp/certs" --token-auth-file "$tmp/tokens.csv" --authorization-mode RBAC \
	--service-account-issuer https://kubernetes.default.svc --service-account-key-file "$tmp/sa.pub" \
	--service-account-signing-key-file "$tmp/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
	--endpoint-reconciler-type none >"$tmp/apiserver.log" 2>&1 &
apiserver_pid=$!

cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: check, cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}}]
users: [{name: check, user: {token: "$token"}}]
contexts: [{name: check, context: {cluster: check, user: check}}]
current-context: check
EOF
k() { "$bin/kubectl" --kubeconfig "$tmp/kubeconfig" "$@"; }

for _ in $(seq 120); do
	k get --raw /readyz >/dev/null 2>&1 && break
	kill -0 "$apiserver_pid" 2>/dev/null || { tail -20 "$tmp/apiserver.log" >&2; exit 1; }
	sleep 0.5
done
k get --raw /readyz >/dev/null

k apply --server-side -f "$root/charts/herald/crds" >/dev/null
k wait --for condition=established --timeout 60s crd/ipaddresspools.herald.dev >/dev/null

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
data=$root/bare-metal/api/v1alpha1/testdata

for f in "$data"/valid/*.yaml "$data"/gaps/*.yaml; do
	name=${f#"$data"/}
	if out=$(k create --dry-run=server -f "$f" 2>&1); then
		[[ $name == gaps/* ]] && name="$name (accepted: known gap, herald-ccm reports it)"
		pass "$name"
	else
		fail "$name: rejected: $out"
	fi
done
for f in "$data"/invalid/*.yaml; do
	name=${f#"$data"/}
	want=$(sed -n 's/^# expect: //p' "$f")
	if out=$(k create --dry-run=server -f "$f" 2>&1); then
		fail "$name: accepted"
	elif [[ $out != *"$want"* ]]; then
		fail "$name: rejected without \"$want\": $out"
	else
		pass "$name: $(tr -s '\n' ' ' <<<"$out" | sed -e 's/^Error from server[^:]*: //' -e 's/^.* is invalid: //' | head -c 220)"
	fi
done

# Defaults, the status subresource and the printer columns on a real object.
k create -f "$data/valid/mixed-families.yaml" >/dev/null
defaults=$(k get ipaddresspool mixed-families -o jsonpath='{.spec.autoAssign}/{.spec.avoidBuggyIPs}')
[[ $defaults == true/false ]] && pass "defaults autoAssign=true avoidBuggyIPs=false" || fail "defaults: $defaults"
k patch hpool mixed-families --subresource status --type merge -p '{"status":{"observedGeneration":1,
	"ipv4":{"total":57,"inUse":2,"free":55},"ipv6":{"total":9223372036854775807,"inUse":1,"free":9223372036854775807},
	"conditions":[{"type":"Ready","status":"True","reason":"Valid","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"},
	{"type":"Conflicting","status":"False","reason":"NoOverlap","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' >/dev/null
columns=$(k get hpool mixed-families -o wide)
echo "$columns"
[[ $(tail -1 <<<"$columns") == *" 2 "*" 55 "*" 1 "*9223372036854775807*True*False* ]] && pass "printer columns" || fail "printer columns"
if out=$(k patch hpool mixed-families --subresource status --type merge -p '{"status":{"ipv4":{"total":1,"inUse":0,"free":-1}}}' 2>&1); then
	fail "status free=-1 accepted"
else
	pass "status free=-1 rejected"
fi

if $chart; then
	# The chart as an admin would install it (with the ci/ values), then
	# herald-ccm built from this tree, run here with the chart's args, cloud
	# config and ServiceAccount token: it must win the lease and give a
	# LoadBalancer Service an address without any RBAC refusal.
	ns=herald-system
	k create namespace "$ns" >/dev/null
	(cd "$root" && go run "$helm" template herald charts/herald --namespace "$ns" --kube-version v1.37.2 \
		-f charts/herald/ci/bare-metal-values.yaml) >"$tmp/chart.yaml"
	if out=$(k apply --dry-run=server --validate=strict -f "$tmp/chart.yaml" 2>&1); then
		pass "chart: helm template | kubectl apply --dry-run=server --validate=strict ($(wc -l <<<"$out") objects)"
	else
		fail "chart: $out"
	fi
	k apply -f "$tmp/chart.yaml" >/dev/null
	(cd "$root" && go build -o "$tmp/herald-ccm" ./cmd/herald-ccm)
	k -n "$ns" get configmap herald-ccm-config -o jsonpath='{.data.cloud-config\.yaml}' >"$tmp/cloud-config.yaml"
	sed "s/$token/$(k -n "$ns" create token herald-ccm)/" "$tmp/kubeconfig" >"$tmp/ccm-kubeconfig"
	mapfile -t args < <(k -n "$ns" get deployment herald-ccm \
		-o go-template='{{range (index .spec.template.spec.containers 0).args}}{{.}}{{"\n"}}{{end}}')
	args=("${args[@]/#--cloud-config=*/--cloud-config=$tmp/cloud-config.yaml}")
	ccm_port=$(free_port)
	"$tmp/herald-ccm" "${args[@]}" --kubeconfig "$tmp/ccm-kubeconfig" --authentication-kubeconfig "$tmp/ccm-kubeconfig" \
		--authorization-kubeconfig "$tmp/ccm-kubeconfig" --bind-address 127.0.0.1 --secure-port "$ccm_port" >"$tmp/ccm.log" 2>&1 &
	ccm_pid=$!
	k apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: Node
		metadata: {name: node-a}
		---
		apiVersion: v1
		kind: Service
		metadata: {name: web, namespace: default}
		spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
	EOF
	vip=
	for _ in $(seq 60); do
		vip=$(k get service web -o jsonpath='{.status.loadBalancer.ingress[*].ip}')
		[[ -n $vip ]] && break
		sleep 1
	done
	[[ $vip == 192.0.2.* ]] && pass "herald-ccm with the chart's RBAC gave Service web $vip" || fail "Service web got no address"
	holder=$(k -n "$ns" get lease herald-ccm -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
	[[ -n $holder ]] && pass "lease $ns/herald-ccm held" || fail "no lease $ns/herald-ccm"
	if grep -qi forbidden "$tmp/ccm.log"; then
		fail "RBAC refused herald-ccm: $(grep -i forbidden "$tmp/ccm.log" | head -3)"
	else
		pass "no RBAC refusal in herald-ccm's log"
	fi
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
