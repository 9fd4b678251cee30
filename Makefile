# One entry point for people and CI alike: `make demo` and `make test`.
# Everything a target needs it installs or builds itself; the Kubernetes and
# Keycloak binaries are cached outside the repo ($TOKENKEEPER_CACHE, default
# ~/.cache/tokenkeeper), so only a fresh machine pays for them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-keycloak test check unit controlplane keycloak venv clean

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

check: $(STAMP)
	$(VENV)/bin/ruff format --check operator devenv tests
	$(VENV)/bin/ruff check operator devenv tests
	$(VENV)/bin/mypy

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
