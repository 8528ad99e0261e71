#!/usr/bin/env bash
# herald on kind, for users with Docker on Linux:
#
#   e2e/kind/kind.sh                  # kind cluster with kube-proxy; herald-agent announces (Layer 2)
#   KUBE_PROXY=none e2e/kind/kind.sh  # kind cluster without kube-proxy; herald-agent forwards too
#   e2e/kind/kind.sh --delete         # remove the cluster
#
# It creates a kind cluster (one control-plane, two workers), builds both
# images with their Dockerfiles and loads them into the nodes, installs the
# chart, creates an IPAddressPool from the top of the kind Docker network's
# IPv4 range and an L2Advertisement, runs an echo Deployment behind a
# LoadBalancer Service, and curls its address from this host. The host
# reaches the VIP because the kind network is a local bridge: that works on
# Linux, not with Docker Desktop's VM (macOS, Windows).
#
# Tools: docker, kubectl, and kind and helm from PATH or, if absent, from
# the Go module proxy (go run). It has not run on the machines herald is
# developed on (no Docker engine there): e2e TestKindScript checks it with
# bash -n and shellcheck, and the range arithmetic below.
set -euo pipefail

CLUSTER=${CLUSTER:-herald}
KUBE_PROXY=${KUBE_PROXY:-iptables}   # iptables (kind's default) or none
TAG=${TAG:-kind}
KIND_VERSION=v0.33.0
HELM_VERSION=v3.21.4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

log() { printf '==> %s\n' "$*" >&2; }

kind() {
	if command -v kind >/dev/null; then command kind "$@"; else go run "sigs.k8s.io/kind@$KIND_VERSION" "$@"; fi
}

helm() {
	if command -v helm >/dev/null; then command helm "$@"; else go run "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$@"; fi
}

# ip2int and int2ip convert dotted IPv4 addresses.
ip2int() {
	local a b c d
	IFS=. read -r a b c d <<<"$1"
	echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
int2ip() {
	local n=$1
	echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))"
}

# l2_range CIDR prints a range of 50 addresses near the top of an IPv4
# subnet (Docker hands out addresses from the bottom), e.g.
# 172.18.0.0/16 -> 172.18.255.200-172.18.255.249.
l2_range() {
	local net=${1%/*} bits=${1#*/}
	if ((bits > 24)); then
		echo "l2_range: $1 is smaller than a /24; give herald a range with POOL=first-last" >&2
		return 1
	fi
	local base size last
	base=$(ip2int "$net")
	size=$((1 << (32 - bits)))
	last=$((base + size - 1))
	echo "$(int2ip $((last - 55)))-$(int2ip $((last - 6)))"
}

# kind_ipv4_subnet prints the kind Docker network's IPv4 subnet.
kind_ipv4_subnet() {
	docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$'
}

create_cluster() {
	if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
		log "kind cluster $CLUSTER exists; reusing it"
		return
	fi
	log "Creating kind cluster $CLUSTER (kube-proxy: $KUBE_PROXY)"
	kind create cluster --name "$CLUSTER" --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  kubeProxyMode: "$KUBE_PROXY"
nodes:
- role: control-plane
- role: worker
- role: worker
EOF
}

load_images() {
	for image in herald-ccm herald-agent; do
		log "Building $image:$TAG (images/$image/Dockerfile)"
		docker build -f "$root/images/$image/Dockerfile" -t "$image:$TAG" \
			--build-arg VERSION="v0.0.0-kind" --build-arg COMMIT="$(git -C "$root" rev-parse HEAD)" "$root"
		kind load docker-image --name "$CLUSTER" "$image:$TAG"
	done
}

install_chart() {
	local forwarding=false api_host=""
	if [[ $KUBE_PROXY == none ]]; then
		# herald-agent replaces kube-proxy, and reaches the apiserver
		# directly: nothing forwards the kubernetes Service before it does.
		forwarding=true
		api_host=$CLUSTER-control-plane
	fi
	log "Installing the chart (agent forwarding: $forwarding)"
	helm upgrade --install herald "$root/charts/herald" --namespace kube-system --wait --timeout 5m \
		--set ccm.image.repository=herald-ccm,ccm.image.tag="$TAG",ccm.image.pullPolicy=Never \
		--set agent.enabled=true,agent.image.repository=herald-agent,agent.image.tag="$TAG",agent.image.pullPolicy=Never \
		--set agent.forwarding="$forwarding",agent.layer2.enabled=true \
		--set agent.apiServer.host="$api_host" \
		--set 'agent.clusterCIDRs={10.244.0.0/16}'
}

create_pool() {
	local pool=${POOL:-}
	if [[ -z $pool ]]; then
		pool=$(l2_range "$(kind_ipv4_subnet)")
	fi
	log "IPAddressPool kind: $pool, announced from every node (L2Advertisement)"
	kubectl apply -f - <<EOF
apiVersion: herald.dev/v1alpha1
kind: IPAddressPool
metadata: {name: kind}
spec: {addresses: ["$pool"]}
---
apiVersion: herald.dev/v1alpha1
kind: L2Advertisement
metadata: {name: kind}
spec: {ipAddressPools: [kind]}
EOF
}

run_echo() {
	log "Echo Deployment and LoadBalancer Service default/echo"
	kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
EOF
	kubectl rollout status deployment/echo --timeout=3m
	local vip=""
	for _ in $(seq 60); do
		vip=$(kubectl get service echo -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
		[[ -n $vip ]] && break
		sleep 2
	done
	[[ -n $vip ]] || { kubectl describe service echo; echo "echo got no address" >&2; return 1; }
	log "curl http://$vip/hostname from this host"
	for _ in $(seq 30); do
		if curl -fsS --max-time 2 "http://$vip/hostname"; then
			echo
			kubectl get service echo
			kubectl describe service echo | sed -n '/Conditions:/,/Events:/p'
			log "herald works on kind: $vip answered"
			return 0
		fi
		sleep 2
	done
	kubectl describe service echo
	echo "http://$vip/ did not answer" >&2
	return 1
}

main() {
	if [[ ${1:-} == --delete ]]; then
		kind delete cluster --name "$CLUSTER"
		return
	fi
	for tool in docker kubectl curl; do
		command -v "$tool" >/dev/null || { echo "kind.sh needs $tool" >&2; exit 1; }
	done
	create_cluster
	kubectl config use-context "kind-$CLUSTER" >/dev/null
	load_images
	install_chart
	create_pool
	run_echo
}

# Sourced (by the test), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
