# Entry points. `make demo` brings up the lab and proves the stack; `make test` runs
# lint, unit tests and every molecule scenario. `make help` lists the rest.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export REPO_ROOT := $(CURDIR)
export IAC_LAB_DIR ?= $(CURDIR)/.lab
export CONTAINERS_CONF ?= $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_PRIVATE_KEY_FILE ?= $(IAC_LAB_DIR)/ssh/id_ed25519
# Controller addresses the host checks send HTTP probes from (lab/hosts, scripts/lab/ca.sh).
export IAC_PROBE_SOURCES ?= 10.89.77.200-219
export ANSIBLE_FORCE_COLOR ?= $(if $(CI),0,1)
export PY_COLORS ?= $(if $(CI),0,1)
export PATH := $(CURDIR)/.venv/bin:$(PATH)

INVENTORY ?= inventory/lab
LAB_HOST ?= lab-web
LAB_IMAGE ?= debian13

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: bootstrap
bootstrap: ## Install what the controller needs (apt packages, host fixes, .venv)
	@scripts/bootstrap.sh

.PHONY: images
images: bootstrap ## Build (or reuse) the lab images
	@for i in debian13 debian12 ca; do scripts/lab/build-image.sh $$i; done

.PHONY: lab-up
lab-up: bootstrap ## Start the CA, lab-web (ports 127.0.0.1:8080->80, :8443->443) and lab-backup
	@scripts/lab/host.sh up $(LAB_HOST) $(LAB_IMAGE) -- -p 127.0.0.1:8080:80 -p 127.0.0.1:8443:443
	@scripts/lab/host.sh up lab-backup $(LAB_IMAGE)

.PHONY: converge
converge: ## Converge playbooks/site.yml on INVENTORY (default: the lab)
	@scripts/converge.sh -i $(INVENTORY) playbooks/site.yml

.PHONY: verify
verify: ## Run the host checks (tests/) against INVENTORY
	@pytest -p no:cacheprovider -q --hosts='ansible://platform' --ansible-inventory=$(INVENTORY) \
	  --ssh-identity-file=$(ANSIBLE_PRIVATE_KEY_FILE) tests/host

.PHONY: demo
demo: bootstrap umami-bundle lab-up ## The main job: lab up, converge, verify, summary
	@scripts/demo.sh

.PHONY: lab-down
lab-down: ## Remove the lab (hosts and CA)
	@scripts/lab/host.sh down $(LAB_HOST); scripts/lab/host.sh down lab-backup; scripts/lab/ca.sh down; echo "lab removed"

.PHONY: restore-drill
restore-drill: ## Restore the latest lab snapshot into scratch space and prove it (checksums, row counts)
	@INVENTORY=$(INVENTORY) scripts/restore-drill.sh

.PHONY: lint
lint: bootstrap ## yamllint (strict), ansible-lint (production profile), ruff, shellcheck-lite
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	bash -n scripts/*.sh scripts/lab/*.sh

.PHONY: unit
unit: bootstrap ## Unit tests (no lab needed)
	pytest -p no:cacheprovider -q tests/unit

.PHONY: umami-bundle
umami-bundle: bootstrap ## Build (or reuse) the Umami bundle from npm (scripts/umami)
	@scripts/umami/build-bundle.sh >/dev/null

.PHONY: molecule
molecule: bootstrap umami-bundle ## Every molecule scenario, one after another
	scripts/lab/ca.sh up
	molecule test --all

.PHONY: test
test: lint unit molecule ## Lint, unit tests and every molecule scenario

.PHONY: benchmark
benchmark: bootstrap ## Converge timings on a fresh lab host (benchmarks/)
	benchmarks/converge.sh
