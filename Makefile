# gcpcall-operator: every install and check the project needs, from its own files.
# `make demo` and `make test` are the README's two commands.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := .bin
# uv writes the lock (uv.lock, exported with hashes to requirements.txt for the image and
# requirements-dev.txt for .venv) and installs it. uv rather than pip-tools: it resolves one
# lock for every Python >= 3.11 and platform (pip-compile locks only for the interpreter it
# runs on), installs it exactly (`uv pip sync` also removes what the lock lacks) and takes
# seconds. Pinned here and in pyproject.toml's [tool.uv] required-version (the unit tests
# check both agree); it lives in its own venv under .bin/, like helm, not in .venv.
UV_VERSION := 0.13.9
UV := $(BIN)/uv-$(UV_VERSION)/bin/uv
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
# promtool, for the chart's alert rules (`promtool check rules`, `promtool test rules`):
# Prometheus v3.16.0, whose Go module is tagged v0.316.0 (release v3.X.Y is module v0.3XX.Y).
PROMTOOL_VERSION := 3.16.0
PROMTOOL_MODULE_VERSION := v0.316.0
# Go 1.27 turns on GOEXPERIMENT=jsonv2, which breaks kube-openapi's /openapi/v2; pin it off.
GO_ENV := GOEXPERIMENT=nojsonv2 GOFLAGS=-buildvcs=false
CP_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(K8S_MINOR) \
  -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/client-go/pkg/version.gitMajor=1 \
  -X k8s.io/client-go/pkg/version.gitMinor=$(K8S_MINOR)

.PHONY: all venv lock controlplane tools lint test test-unit demo bench clean

all: venv controlplane

# A new UV_VERSION is a new path, so bumping it installs that uv.
$(UV):
	$(PY) -m venv $(BIN)/uv-$(UV_VERSION)
	$(BIN)/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION)

# Exactly the lock (runtime + dev, every file hash-checked, nothing else resolved), then the
# project itself, editable and without dependencies. Refuses a lock that pyproject.toml has
# moved past. Rebuilt whenever the lock or the exported requirements change. Compiled to
# bytecode as the image is: where PYTHONDONTWRITEBYTECODE is set, every operator process a
# test or a bench starts would otherwise compile kopf, the Google and Kubernetes clients
# again (over a quarter of a 3,000-object restart's CPU in a profile; the image never pays it).
$(VENV)/.installed: pyproject.toml uv.lock requirements.txt requirements-dev.txt | $(UV)
	@$(UV) lock -q --check --offline --python $(PY) || \
	  { echo "uv.lock does not match pyproject.toml: run 'make lock'" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(UV) pip sync -q --compile-bytecode --python $(VENV)/bin/python --require-hashes \
	  requirements-dev.txt
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Re-resolve uv.lock from pyproject.toml (keeping every pin that still fits; pass
# LOCK_FLAGS=--upgrade to move everything to the newest allowed) and export it with hashes:
# requirements.txt is the runtime set the image installs, requirements-dev.txt adds [dev].
lock: | $(UV)
	$(UV) lock --python $(PY) $(LOCK_FLAGS)
	$(UV) export -q --frozen --hashes --no-emit-project -o requirements.txt
	$(UV) export -q --frozen --hashes --no-emit-project --extra dev -o requirements-dev.txt

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

# promtool, built from the Go module proxy like helm.
$(BIN)/promtool:
	mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) $(GO_ENV) go install \
	  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$(PROMTOOL_VERSION)" \
	  github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_MODULE_VERSION)

tools: $(BIN)/helm $(BIN)/promtool

lint: venv tools
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(BIN)/helm lint --strict helm/gcpcall-operator
	@# the chart's alerts: the PrometheusRule's spec as a rules file, then its unit tests
	@rules=$$(mktemp -d) && trap 'rm -rf "$$rules"' EXIT && \
	  $(BIN)/helm template gcpcall-operator helm/gcpcall-operator -n gcpcall-system \
	    --set clusterName=e2e --set metrics.prometheusRule.enabled=true \
	    --show-only templates/prometheusrule.yaml \
	  | $(VENV)/bin/python -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(sys.stdin)["spec"], sys.stdout)' \
	    > "$$rules/gcpcall-alerts.rules.yaml" && \
	  cp tests/e2e/test_alert_rules_promtool.yaml "$$rules/" && \
	  $(BIN)/promtool check rules "$$rules/gcpcall-alerts.rules.yaml" && \
	  $(BIN)/promtool test rules "$$rules/test_alert_rules_promtool.yaml"
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
