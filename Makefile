# One entry point for people and CI alike: `make demo` and `make test`.
# Everything a target needs it installs or builds itself; the Kubernetes and
# Keycloak binaries are cached outside the repo ($TOKENKEEPER_CACHE, default
# ~/.cache/tokenkeeper), so only a fresh machine pays for them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-keycloak test check unit bench bench-smoke controlplane keycloak venv clean install.yaml

demo: $(STAMP) controlplane
	$(PY) -m devenv.demo

demo-keycloak: $(STAMP) controlplane keycloak
	$(PY) -m devenv.demo --keycloak

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: $(STAMP) controlplane keycloak check
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; \
	exit $$status

unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/endpoint $(PYTEST_ARGS)

# The operator under load on the local control plane; prints a table and the
# path of the JSON it writes (benchmarks/RESULTS.md says what it measures).
# About 15 minutes; bench-smoke runs every phase with a handful of objects.
bench: $(STAMP) controlplane
	$(PY) -m benchmarks.run $(BENCH_ARGS)

bench-smoke: $(STAMP) controlplane
	$(PY) -m benchmarks.run --smoke $(BENCH_ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff format --check operator devenv tests benchmarks
	$(VENV)/bin/ruff check operator devenv tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

# manifests/install.yaml: the kustomization in one file, for `kubectl apply -f`.
# A test fails when it is out of date.
install.yaml: $(STAMP) controlplane
	$(PY) -m devenv.installyaml

controlplane:
	hack/build-controlplane.sh

keycloak:
	hack/fetch-keycloak.sh

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
