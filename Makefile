# herald — build, test, lint. `make test` is the whole test suite and what CI
# runs (.ci/run); `make demo` shows a client's request answered through a
# LoadBalancer Service's VIP, in network namespaces on a real kube-apiserver,
# and the VIP failing over when its node's agent dies.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
GOLANGCI_LINT := $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
# Debian packages the tests and the lab need (procps: sysctl inside the
# network tier's namespaces; conntrack: `make bench` compares herald-agent's
# netlink deletion of stale UDP flows with this tool, which it replaced;
# bird2 and frr: the real BGP routers of the BGP tier, run in the lab's
# namespaces by e2e/routers, never as the host's services; shellcheck:
# e2e TestKindScript and make lint check the scripts users run where Docker
# is, which cannot run here).
APT_PACKAGES := nftables iproute2 procps conntrack iperf3 bird2 frr shellcheck
# Packages of the unit tier: everything but the end-to-end tests.
UNIT_PKGS = $$($(GO) list ./... | grep -v '/e2e')
# Prints the folder with kube-apiserver, etcd and kubectl, building them
# (once, cached outside the clone) if needed.
K8S_BIN = $$(e2e/tools/build.sh)

# The version stamped into the binaries (`herald-ccm --version`, its
# start-up log line): the release tag on HEAD, else the next release's
# version with the commit, marked when the tree has uncommitted changes.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --exact-match 2>/dev/null || \
	echo "v0.1.0-dev+$$(git rev-parse --short=12 HEAD)$$(git diff --quiet HEAD 2>/dev/null || echo .dirty)")
VERSION_PKG := k8s.io/component-base/version
LDFLAGS := -X $(VERSION_PKG).gitVersion=$(VERSION) -X $(VERSION_PKG).gitCommit=$(shell git rev-parse HEAD) \
	-X $(VERSION_PKG).gitTreeState=$(shell git diff --quiet HEAD 2>/dev/null && echo clean || echo dirty) \
	-X $(VERSION_PKG).buildDate=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

.PHONY: all build ldflags images docker-images test test-unit test-integration lint bench bench-kube-proxy tools deps demo scale scale-aws clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...
	$(GO) build -o bin/herald-echo ./e2e/echo

# Prints the -ldflags that stamp the version; the end-to-end tests build
# herald's binaries with them, as users get them.
ldflags:
	@echo "$(LDFLAGS)"

# Container images for linux/amd64 and linux/arm64 without Docker
# (images/build): an OCI layout, an OCI archive and a docker-save tarball
# per platform of each image in IMAGES_OUT, tagged with the chart's
# appVersion unless IMAGES_ARGS says --tag. Needs apt-get and dpkg-deb
# (Debian) for the base layers' packages.
IMAGES_OUT ?= bin/images
IMAGES_ARGS ?=
images:
	$(GO) -C images/build run . --root "$(CURDIR)" --out "$(IMAGES_OUT)" $(IMAGES_ARGS)

# The same images with Docker (BuildKit), pushed to REGISTRY: for builders
# who have Docker; the Dockerfiles build what `make images` builds.
REGISTRY ?= registry.example
TAG ?= $$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/herald/Chart.yaml)
docker-images:
	for image in herald-ccm herald-agent; do \
		docker buildx build --platform linux/amd64,linux/arm64 --push \
			--build-arg VERSION=v$(TAG) --build-arg COMMIT=$$(git rev-parse HEAD) \
			-f images/$$image/Dockerfile -t $(REGISTRY)/$$image:$(TAG) . ; \
	done

# Installs the Debian packages the tests need, only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# kube-apiserver, etcd and kubectl v1.37.2 from the Go module proxy.
tools:
	@e2e/tools/build.sh

# As root, `make test` has everything every tier needs (deps installs the
# packages, the Kubernetes binaries get built): there a tier that cannot run
# fails instead of skipping, as with CI=true (internal/testenv). The variable
# reaches test-unit and test-integration as prerequisites of test; either
# target run alone, or `go test` by hand, still skips what it cannot run.
test: export HERALD_REQUIRE_TIERS := $(shell [ "$$(id -u)" = 0 ] && echo 1)
test: deps test-unit test-integration

test-unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# 45m: on a cold Go build cache e2e TestImages alone cross-compiles both
# binaries for two platforms (17 min measured on a loaded 2-core machine);
# warm, it only links them again.
test-integration:
	bin=$(K8S_BIN); HERALD_K8S_BIN=$$bin $(GO) test -count=1 -timeout 45m ./e2e/...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	$(GO) -C images/build vet ./...
	shellcheck e2e/kind/kind.sh images/debian-rootfs.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(UNIT_PKGS)

# The scale test (issues 3, 8): 1,000 kwok Nodes, 10,000 LoadBalancer Services on
# a real apiserver; prints and writes the figures (SCALE_OUT, JSON). Not part
# of `make test`: it takes minutes and loads the machine. SCALE_ARGS adds test
# flags, e.g. SCALE_ARGS="-scale.ccm-gomemlimit=200MiB -scale.services=2500" (paths in
# them are relative to e2e/scale).
SCALE_OUT ?= bin/scale.json
SCALE_ARGS ?=
scale:
	mkdir -p $(dir $(SCALE_OUT))
	bin=$(K8S_BIN); HERALD_K8S_BIN=$$bin $(GO) test -count=1 -timeout 30m -v -run '^TestScale$$' ./e2e/scale \
		-args -scale -scale.out "$(abspath $(SCALE_OUT))" $(SCALE_ARGS)

# The AWS scale benchmark (issue 12): 1,000 kwok Nodes and 100 Services
# against herald's AWS fake; writes the AWS calls per operation for creating
# all, one Node joining and a no-op resync (AWS_SCALE_OUT, JSON).
AWS_SCALE_OUT ?= bin/aws-scale.json
scale-aws:
	mkdir -p $(dir $(AWS_SCALE_OUT))
	bin=$(K8S_BIN); HERALD_K8S_BIN=$$bin $(GO) test -count=1 -timeout 30m -v -run '^TestAWSScale$$' ./e2e/scale \
		-args -scale.aws -scale.aws.out "$(abspath $(AWS_SCALE_OUT))"

# herald-agent and kube-proxy v1.37.2 (nftables mode, built once from
# e2e/tools and cached beside the other Kubernetes binaries) side by side on
# one apiserver with 10k IPv6 Services of three endpoints each: start to
# first sync, one endpoint added to the kernel, restart, peak RSS, CPU.
# Prints the table and writes the figures (DATAPLANE_OUT, JSON); root.
# DATAPLANE_ARGS adds test flags, e.g. "-dataplane.runs=5 -dataplane.heap-profile=$(CURDIR)/bin/agent.heap".
DATAPLANE_OUT ?= bin/dataplane.json
DATAPLANE_ARGS ?=
bench-kube-proxy: deps
	mkdir -p $(dir $(DATAPLANE_OUT))
	bin=$(K8S_BIN); kp=$$(e2e/tools/build.sh kube-proxy); HERALD_K8S_BIN=$$bin $(GO) test -count=1 -timeout 60m -v \
		-run '^TestDataplaneSideBySide$$' ./e2e/scale \
		-args -dataplane -dataplane.kube-proxy "$$kp/kube-proxy" -dataplane.out "$(abspath $(DATAPLANE_OUT))" $(DATAPLANE_ARGS)

# The lab needs root (network namespaces, nftables, raw sockets); the demo
# refuses to start without it and says so.
demo: deps build
	bin=$(K8S_BIN); $(GO) run ./e2e/demo --k8s-bin "$$bin" --bin bin

clean:
	rm -rf bin
