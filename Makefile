# classroom — every task has a target; `make help` lists them.
SHELL := /bin/bash
STACK ?= dev

.PHONY: help setup up preview destroy term-end term-new term-status test unit ssh labs attack labhost e2e lint bench cluster-start cluster-stop toolchain clean

help: ## List every task
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24

setup: ## Install Debian packages, the virtualenvs and the Go-built toolchain (idempotent)
	tools/setup.sh

toolchain: ## Build/refresh the cached Pulumi engine, plugins, control plane and linters
	tools/toolchain.sh all

up: ## Main job: `pulumi up` of STACK (default dev) — against the local cluster unless KUBECONFIG/KUBE_CONTEXT is set
	tools/up.sh up $(STACK)

preview: ## `pulumi preview --diff` of STACK
	tools/up.sh preview $(STACK)

destroy: ## End-of-term teardown of STACK: everything but the protected homes
	tools/up.sh destroy $(STACK)

term-end: ## Close STACK's term: destroy all but the homes, write out/end-of-term-STACK.md
	.venv/bin/classroom term end --stack $(STACK)

term-new: ## Next term's stack from FROM: make term-new FROM=a TO=b START=YYYY-MM-DD END=YYYY-MM-DD [ROSTER=f.csv] [ADOPT=1]
	.venv/bin/classroom term new --from $(FROM) --to $(TO) --start $(START) --end $(END) $(if $(ROSTER),--roster $(ROSTER)) $(if $(ADOPT),--adopt-homes)

term-status: ## Every stack: class, term, dates, students, address, lab hosts, state
	.venv/bin/classroom term status

cluster-start: ## Start the local control plane (etcd, apiserver, kwok) in .state/cluster
	tools/up.sh cluster-start

cluster-stop: ## Stop the local control plane
	tools/up.sh cluster-stop

test: ## Every test tier (unit, ssh, labs, attack, labhost, e2e), installing what is missing first
	tools/test.sh all

unit: ## Unit tier only (mocks, manifests, linters)
	tools/test.sh unit

ssh: ## SSH tier only (real OpenSSH)
	tools/test.sh ssh

labs: ## Lab tier only (labd, session hook, Traefik; k3d double)
	tools/test.sh labs

attack: ## Attack tier only (a hostile student against the image's real PAM stack, sshd, hook, reconciler)
	tools/test.sh attack

labhost: ## Lab-host tier only (sshd in a network namespace, labd, Traefik)
	tools/test.sh labhost

e2e: ## End-to-end tier only (real engine + local control plane)
	tools/test.sh e2e

lint: ## ruff check, ruff format --check, mypy (as the unit tier runs them)
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy components __main__.py

bench: ## Benchmarks; figures land in bench/results/
	tools/bench.sh

clean: ## Remove local state of the dev cluster and test output (keeps caches)
	tools/up.sh cluster-stop || true
	rm -rf out .state/cluster
