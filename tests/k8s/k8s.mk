# Real-Kubernetes tests. Included by the Makefile (include tests/k8s/k8s.mk);
# uses its GO, CACHE and TEST_FLAGS.
#
#   make kube-bins   kube-apiserver, kube-controller-manager, kube-scheduler,
#                    kubectl and kubelet $(KUBE_VERSION) and crictl from the Go module
#                    proxy into $(KUBE_BIN_DIR) (first time ~10 min on 2
#                    cores, then cached), and from apt if missing: etcd
#                    (Debian etcd-server), containerd and runc
#   make e2e-k8s     the discovery source and the install/kubernetes manifests
#                    against that control plane, then a real node (kubelet +
#                    containerd + the CNI chain + meshlessd; about 60 s in all)
#
# `make test` runs ./... which includes tests/k8s, so it needs the binaries
# too: kube-bins is added to its prerequisites here.

# Wherever this file is included, it does not change the default goal.
_k8s_default_goal := $(.DEFAULT_GOAL)

KUBE_VERSION ?= v1.35.4
KUBE_BIN_DIR = $(CACHE)/k8s/bin

.PHONY: kube-bins e2e-k8s

kube-bins:
	@CACHE='$(CACHE)' KUBE_VERSION='$(KUBE_VERSION)' GO='$(GO)' tests/k8s/build-kube.sh

e2e-k8s: kube-bins
	MESHLESS_K8S_BIN_DIR='$(KUBE_BIN_DIR)' tests/run-go-tests.sh $(TEST_FLAGS) ./daemon/kube/ ./tests/k8s/

test: kube-bins
test: export MESHLESS_K8S_BIN_DIR = $(KUBE_BIN_DIR)

.DEFAULT_GOAL := $(_k8s_default_goal)
