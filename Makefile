# gcpcall-operator: every install and check the project needs, from its own files.
# `make demo` and `make test` are the README's two commands.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := .bin
K8S_VERSION := v1.36.3
K8S_MINOR := 36
HELM_VERSION := v3.22.0
HELM_K8S_MINOR := 37   # helm v3.22.0 builds against k8s.io/client-go v0.37
# Without these, helm assumes Kubernetes 1.20 and refuses the chart's kubeVersion.
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)
# Go 1.27 turns on GOEXPERIMENT=jsonv2, which breaks kube-openapi's /openapi/v2; pin it off.
GO_ENV := GOEXPERIMENT=nojsonv2 GOFLAGS=-buildvcs=false
CP_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(K8S_MINOR) \
  -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/client-go/pkg/version.gitMajor=1 \
  -X k8s.io/client-go/pkg/version.gitMinor=$(K8S_MINOR)

.PHONY: all venv controlplane tools lint test test-unit demo bench clean

all: venv controlplane

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The real kube-apiserver + etcd in one binary, and a kubectl of the same version
# (a symlink: the binary acts as kubectl when called so). Slow once; Go's cache after that.
$(BIN)/controlplane: tests/controlplane/go.mod tests/controlplane/go.sum tests/controlplane/main.go
	mkdir -p $(BIN)
	cd tests/controlplane && $(GO_ENV) go build -ldflags "$(CP_LDFLAGS)" -o ../../$(BIN)/controlplane .
	ln -sf controlplane $(BIN)/kubectl

controlplane: $(BIN)/controlplane

# helm, built from the Go module proxy (no other download source is reachable here).
$(BIN)/helm:
	mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) $(GO_ENV) go install -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

tools: $(BIN)/helm

lint: venv tools
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(BIN)/helm lint --strict helm/gcpcall-operator
	$(VENV)/bin/hadolint Dockerfile

test: venv controlplane tools
	$(VENV)/bin/pytest

test-unit: venv
	$(VENV)/bin/pytest tests/unit

demo: venv controlplane
	$(VENV)/bin/python -m gcpcall demo

bench: venv controlplane
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(BIN) $(VENV) .pytest_cache .mypy_cache .ruff_cache
