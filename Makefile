# Meshless. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
CACHE ?= $(CURDIR)/.cache
CNI_BIN_DIR := $(CACHE)/cni/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.Version=$(VERSION)
# Reference CNI plugins, at the version pinned in go.mod.
CNI_PLUGINS := main/bridge main/loopback ipam/host-local
# Test packages run one at a time: root tests share iptables' lock and
# kernel state, and the machines have two cores.
TEST_FLAGS ?= -count=1 -p 1 -timeout 30m
# Where make bench writes its results (a trial run can go elsewhere than
# the committed bench/results).
BENCH_OUT ?= bench/results

.PHONY: all help build deps cni-plugins test unit demo bench clean

all: build

help:
	@echo "make build        bin/meshless-cni, bin/meshlessd, bin/meshlessctl, bin/meshless-signer"
	@echo "make demo         build, run a two-node lab on this machine, show the mesh at work, tear it down (root)"
	@echo "make test         install what tests need, then run every test (root for the netns tests)"
	@echo "make unit         only the tests that need no root"
	@echo "make cni-plugins  the reference CNI plugins into $(CNI_BIN_DIR)"
	@echo "make kube-bins    kube-apiserver, controller-manager, kubelet, kubectl at a pinned version into .cache/k8s (first time ~10 min)"
	@echo "make e2e-k8s      the Kubernetes tests alone: discovery, manifests, a real kubelet + containerd node (root)"
	@echo "make bench        benchmarks on the lab: direct vs HAProxy sidecars vs meshless, into bench/results (root; BENCH_QUICK=1: ~3 min; BENCH_OUT=dir)"

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meshless-cni ./plugin/cmd/meshless-cni
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meshlessd ./daemon/cmd/meshlessd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meshlessctl ./install/cmd/meshlessctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meshless-signer ./install/cmd/meshless-signer
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/demo-server ./tests/apps/demo-server
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/demo-client ./tests/apps/demo-client

# OS packages the root tests use (iptables-nft and -legacy, nft, ip).
deps:
	@tests/install-deps.sh

cni-plugins:
	@mkdir -p $(CNI_BIN_DIR)
	@for p in $(CNI_PLUGINS); do \
	  CGO_ENABLED=0 $(GO) build -o $(CNI_BIN_DIR)/$$(basename $$p) github.com/containernetworking/plugins/plugins/$$p || exit 1; \
	done
	@echo "reference CNI plugins ($$($(GO) list -m -f '{{.Version}}' github.com/containernetworking/plugins)) in $(CNI_BIN_DIR)"

test: deps build cni-plugins
	MESHLESS_BIN_DIR=$(CURDIR)/$(BIN) MESHLESS_CNI_BIN_DIR=$(CNI_BIN_DIR) \
	  tests/run-go-tests.sh $(TEST_FLAGS) ./...

demo: deps
	@echo "==> building (first time: a minute or two)"
	@$(MAKE) --no-print-directory build cni-plugins >/dev/null
	@echo "==> built bin/ and the reference CNI plugins"
	@$(BIN)/meshlessctl demo --bin-dir $(CURDIR)/$(BIN) --cni-bin-dir $(CNI_BIN_DIR)

# Benchmarks (not part of `make test`): docs in README "Benchmarks".
bench: build cni-plugins
	@command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nftables iproute2; }
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/benchapp ./bench/cmd/benchapp
	$(GO) build -o $(BIN)/meshless-bench ./bench/cmd/meshless-bench
	$(BIN)/meshless-bench --bin-dir $(BIN) --cni-bin-dir $(CNI_BIN_DIR) --out $(BENCH_OUT)

unit:
	$(GO) test -count=1 -short ./...

clean:
	rm -rf $(BIN) $(CACHE)/testbins

# The real-Kubernetes tests: kube-bins, e2e-k8s (and kube-bins before test).
include tests/k8s/k8s.mk
