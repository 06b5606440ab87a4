# Entry points. `make demo` brings up the lab and proves the stack; `make test` runs
# lint, unit tests, the app's tests and every molecule scenario. `make help` lists the rest.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export REPO_ROOT := $(CURDIR)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= $(if $(CI),0,1)
export PY_COLORS ?= $(if $(CI),0,1)
export PATH := $(CURDIR)/.venv/bin:$(PATH)

# Which lab `make demo` and `make lab-up` bring up: `single` (lab-web carries every tier,
# inventory/lab) or `tiers` (inventory/tiers: tier-edge the edge and analytics, tier-app1
# and tier-app2 the app, tier-db the database; docs/tiers.md). `make lab-down` removes either.
LAB ?= single
ifeq ($(LAB),tiers)
LAB_INVENTORY := inventory/tiers
LAB_HOST ?= tier-edge
LAB_OTHER_HOSTS := tier-app1 tier-app2 tier-db lab-backup
else ifeq ($(LAB),single)
LAB_INVENTORY := inventory/lab
LAB_OTHER_HOSTS := lab-backup
else
$(error LAB=$(LAB): use LAB=single or LAB=tiers)
endif
# Every host either lab may run (`make lab-down`).
LAB_ALL_HOSTS := lab-web tier-edge tier-app1 tier-app2 tier-db lab-backup

# What to converge or verify: the lab by default, e.g. INVENTORY=inventory/production.
INVENTORY ?= $(LAB_INVENTORY)
# Extra ansible-playbook options for `make converge`, e.g. ARGS='--check --diff --tags nginx --limit web-1'.
ARGS ?=
# The lab host's image for `make demo` / `make lab-up`: ubuntu2404 (the production target),
# debian13 or debian12 (lab/images/*.conf).
LAB_IMAGE ?= ubuntu2404
LAB_HOST ?= lab-web

# Lab-only settings (the lab's SSH key, the controller's probe addresses on the lab bridge)
# apply only to lab inventories: those that carry group_vars/all/lab.yml. A production
# inventory gets none of them: its own SSH keys and the controller's own address.
IS_LAB := $(if $(wildcard $(INVENTORY)/group_vars/all/lab.yml),1,)
export IAC_LAB_DIR ?= $(CURDIR)/.lab
export CONTAINERS_CONF ?= $(CURDIR)/lab/containers.conf
ifeq ($(IS_LAB),1)
export ANSIBLE_PRIVATE_KEY_FILE ?= $(IAC_LAB_DIR)/ssh/id_ed25519
export IAC_PROBE_SOURCES ?= 10.89.77.200-219
export IAC_OFFENDER_SOURCES ?= 10.89.77.230-239
LAB_PYTEST_ARGS := --ssh-identity-file=$(ANSIBLE_PRIVATE_KEY_FILE)
endif

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# --- The controller -----------------------------------------------------------------------
.PHONY: controller
controller: ## Production controller (an ops laptop): only the pinned .venv; no root, podman or cgroups
	@scripts/bootstrap.sh --controller-only

.PHONY: bootstrap
bootstrap: ## Lab controller: Debian packages, podman host fixes, the pinned .venv (root)
	@scripts/bootstrap.sh

# --- Converging and verifying any inventory -------------------------------------------------
.PHONY: converge
converge: ## Converge playbooks/site.yml on INVENTORY; ARGS='--check --diff --tags nginx --limit HOST'
	@scripts/converge.sh -i $(INVENTORY) $(ARGS) playbooks/site.yml

.PHONY: verify
verify: ## Every host check (disruptive ones too: lab and CI) against INVENTORY; report in reports/latest/
	@pytest -p no:cacheprovider -q --progress --hosts='ansible://all' --ansible-inventory=$(INVENTORY) \
	  $(LAB_PYTEST_ARGS) --audit-report=reports -n auto --dist loadgroup tests/host

# roles/app with any ASGI app: deploys tests/fixtures/hello_asgi beside the platform app on
# INVENTORY's platform hosts (generic variables only), checks it, removes it, and proves the
# host is left as it was (test_zz_nothing_left_behind). Changes the hosts: lab and CI only.
.PHONY: generic-app-test
generic-app-test: ## roles/app deploys a second, minimal ASGI app on INVENTORY (then removes it)
	@pytest -p no:cacheprovider -q --hosts='ansible://all' --ansible-inventory=$(INVENTORY) \
	  $(LAB_PYTEST_ARGS) tests/host/test_app_generic.py tests/host/test_zz_nothing_left_behind.py

# The read-only audit, safe against production: only non-disruptive checks that cite a
# claim of policy/claims.yml, every host of the inventory in parallel (one worker per host).
# Writes reports/<time>/{evidence.json,junit.xml,index.html}, links reports/latest to it,
# and fails when a claim fails on a host without a named exception (policy_exceptions).
.PHONY: audit
audit: ## Read-only audit of INVENTORY against policy/claims.yml (safe in production): reports/latest/
	@pytest -p no:cacheprovider -q --progress --hosts='ansible://all' --ansible-inventory=$(INVENTORY) \
	  $(LAB_PYTEST_ARGS) --audit-readonly --audit-report=reports -n auto --dist loadgroup tests/host

# --- The lab --------------------------------------------------------------------------------
.PHONY: images
images: bootstrap ## Build (or reuse) the lab images
	@for i in ubuntu2404 debian13 debian12 ca; do scripts/lab/build-image.sh $$i; done

.PHONY: lab-up
lab-up: bootstrap ## Start the CA, lab-web (LAB_IMAGE; ports 127.0.0.1:8080->80, :8443->443) and lab-backup; LAB=tiers: tier-edge, tier-app1, tier-app2, tier-db, lab-backup
	@scripts/lab/host.sh up $(LAB_HOST) $(LAB_IMAGE) -- -p 127.0.0.1:8080:80 -p 127.0.0.1:8443:443
	@for h in $(LAB_OTHER_HOSTS); do scripts/lab/host.sh up $$h $(LAB_IMAGE); done

.PHONY: demo
demo: bootstrap umami-bundle ## The main job: lab up, converge, verify, summary (LAB_IMAGE=debian13 for Debian, LAB=tiers for tiers)
	@LAB=$(LAB) LAB_IMAGE=$(LAB_IMAGE) LAB_HOST=$(LAB_HOST) LAB_INVENTORY=$(LAB_INVENTORY) \
	  LAB_OTHER_HOSTS='$(LAB_OTHER_HOSTS)' scripts/demo.sh

.PHONY: lab-down
lab-down: ## Remove whichever lab runs (hosts and CA)
	@for h in $(sort $(LAB_HOST) $(LAB_ALL_HOSTS)); do scripts/lab/host.sh down $$h; done; scripts/lab/ca.sh down; echo "lab removed"

.PHONY: restore-drill
restore-drill: ## Restore the latest snapshot of every tier host into scratch space and prove it (checksums, row counts); ARGS="-- --repo offsite"
	@INVENTORY=$(INVENTORY) scripts/restore-drill.sh $(ARGS)

.PHONY: umami-bundle
umami-bundle: bootstrap ## Build (or reuse) the Umami bundle from npm (scripts/umami)
	@scripts/umami/build-bundle.sh >/dev/null

# --- Tests ----------------------------------------------------------------------------------
.PHONY: lint
lint: bootstrap ## yamllint (strict), ansible-lint (production profile), ruff, bash -n
	yamllint --strict .
	@# A scratch ANSIBLE_HOME: no copy of this collection left in ~/.ansible (e.g. by an
	@# older molecule prerun) can shadow the working tree's modules.
	ANSIBLE_HOME=$(CURDIR)/.cache/ansible-lint-home ansible-lint --profile production
	ruff check .
	bash -n scripts/*.sh scripts/lab/*.sh scripts/audit/*.sh

.PHONY: unit
unit: bootstrap ## Unit tests (no lab needed)
	pytest -p no:cacheprovider -q tests/unit

.PHONY: app-test
app-test: ## The reference app's own tests (app/tests) in .venv-app (its hash-pinned lock)
	@scripts/app-test.sh

.PHONY: molecule
molecule: bootstrap umami-bundle ## Every molecule scenario, one after another
	@# The lab CA is stopped afterwards, pass or fail, unless it ran before (a lab that is up keeps it).
	@if scripts/lab/ca.sh running; then ca_was=up; else ca_was=down; fi; \
	scripts/lab/ca.sh up; rc=0; molecule test --all || rc=$$?; \
	[ $$ca_was = up ] || scripts/lab/ca.sh down; exit $$rc

.PHONY: sanity
sanity: bootstrap ## ansible-test sanity on the collection (the tests that apply and run offline)
	scripts/sanity.sh

.PHONY: collection-check
collection-check: bootstrap ## Build the collection, install it offline, apply hardened.platform.nginx alone to a fresh host
	scripts/collection-check.sh

.PHONY: test
test: lint unit sanity app-test collection-check molecule ## Lint, unit and app tests, the collection as a consumer uses it, every molecule scenario

.PHONY: benchmark
benchmark: bootstrap ## Converge timings, fresh and idempotent, on new lab hosts (LAB=tiers: the tiered layout; benchmarks/)
	benchmarks/converge.sh $(LAB_IMAGE) $(LAB)
