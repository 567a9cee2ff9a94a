# The two commands a newcomer needs (see README.md):
#   make serve   - install into .venv and run the demo: a seeded local FHIR server + the service wired to it
#   make test    - install into .venv (plus the Debian tools the tests use) and run the whole test suite
# .ci/run calls `make test`.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the tests need from Debian, as command:package. ffmpeg derives every audio format from the fixtures, strace
# proves no file is written, Java + Maven build the HAPI FHIR test server, Node + npm run FHIR.js and the OIDC
# server, Chromium is the browser of tests/browser (Playwright drives it; it downloads no browser of its own),
# podman + runc + mmdebstrap build the container image on a stand-in base and run it (tests/container), HAProxy
# balances several replicas and nginx terminates TLS in front of one (tests/integration/test_replicas.py, test_tls.py).
# (espeak-ng, festival, festvox-us-slt-hts, festvox-kallpc16k and festvox-kdlpc16k are only needed to rebuild the
# speech fixtures.)
TEST_APT := ffmpeg:ffmpeg strace:strace java:openjdk-17-jdk-headless mvn:maven node:nodejs npm:npm chromium:chromium podman:podman runc:runc mmdebstrap:mmdebstrap haproxy:haproxy nginx:nginx openssl:openssl

.PHONY: serve test install system-deps bench deploy-check

serve: install
	$(VENV)/bin/fhir-scribe demo

NODE_STAMPS := tests/fhir_validator/node_modules/.installed tests/oidc/node_modules/.installed

# Two pytest-xdist workers, each test file on one worker (its module's servers started once): on the 2-core machine
# 5 integration files took 205 s instead of 286 s (real-time audio, leases and drains wait more than they compute);
# each worker starts its own session servers (HAPI, sekmet-fhir). `make test PYTEST_ARGS=` runs in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

test: install system-deps $(NODE_STAMPS)
	$(PY) -m pytest $(PYTEST_ARGS)

# Test tools from npm: FHIR.js (the official R4 definitions) validates every resource the service emits;
# oidc-provider plays the EHR's SMART authorization server.
tests/%/node_modules/.installed: tests/%/package-lock.json
	npm ci --prefix tests/$* --no-audit --no-fund --loglevel=error
	touch $@

bench: install system-deps
	$(PY) bench/transcription.py

# The Helm chart: lint, render, validate and checkov (tools pinned, built/installed on first use; see the script).
deploy-check:
	PYTHON=$(PYTHON) bash deploy/check.sh

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo]"
	$(PY) -m pip check
	rm -f $(VENV)/.installed-* && touch $@

system-deps:
	@missing=""; for pair in $(TEST_APT); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
