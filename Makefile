# The two commands of the README: `make up` and `make test`.
SHELL := /bin/bash
export KUMO_BIN := /var/cache/envjupyter/bin/kumo-v0.33.1

.PHONY: up test prepare unit invoke lint

## up: install what is missing, start the whole system locally, print where to open it
up: prepare
	go run ./infra/devstack/cmd/devstack -root . up

## test: every test, on the real parts (run as root)
test: prepare lint
	go vet ./...
	go test -count=1 -timeout 25m ./...

## unit: the tests that need nothing but Go
unit:
	go test -count=1 -short ./...

prepare:
	bash infra/local/prepare.sh

lint:
	bash infra/ci/lint-template.sh

## invoke: run a function of the running stack on a sample event, e.g.
##   make invoke FN=api EVENT=events/api/status.json
invoke:
	go run ./infra/devstack/cmd/devstack -root . invoke $(FN) $(EVENT)
