# The two commands of the README: `make up` and `make test`.
SHELL := /bin/bash
export KUMO_BIN := /var/cache/envjupyter/bin/kumo-v0.33.1
# Heavy runs (the end-to-end suite, benchmarks) take this lock: the machine
# has two cores, and two stacks at once make both flaky.
HEAVY := flock -o /tmp/envjupyter-heavy.lock

.PHONY: up test prepare unit race fuzz invoke lint web bench bench-smoke sidecar

## up: install what is missing, start the whole system locally, print where to open it
##   (HOSTS=2: two Docker hosts, the second in a network namespace of its own)
HOSTS ?= 1
up: prepare web
	go run ./infra/devstack/cmd/devstack -root . -hosts $(HOSTS) up

## test: every test, on the real parts (run as root), and the benchmarks in miniature
test: prepare lint web fuzz race
	go vet ./...
	$(MAKE) bench-smoke
	$(HEAVY) go test -count=1 -timeout 25m ./...

## bench: every benchmark of docs/BENCHMARKS.md, with baselines and verdicts (about 20 minutes: the recorded run took 1 190 s)
bench: prepare
	$(HEAVY) go run ./infra/bench

## bench-smoke: every benchmark, tiny, printing figures without judging them (CI keeps them working)
bench-smoke: prepare
	$(HEAVY) go run ./infra/bench -smoke

## unit: the tests that need nothing but Go
unit:
	go test -count=1 -short ./...

## race: the packages whose tests need no real component (the sidecar's core,
## the control plane, the wire, the dependency rules), under the race detector
RACE_PACKAGES := ./sidecar/agent ./sidecar/firewall ./sidecar/jupyter ./functions/... ./shared/... ./infra/layout ./infra/iamcheck
race:
	go test -race -count=1 -short $(RACE_PACKAGES)

## fuzz: each fuzz target for a bounded time (the seed corpus runs in every go test)
fuzz:
	go test -run '^$$' -fuzz '^FuzzStartRequest$$' -fuzztime 15s ./functions/api
	go test -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime 15s ./shared/message
	go test -run '^$$' -fuzz '^FuzzDecodeReport$$' -fuzztime 15s ./shared/message

## sidecar: the host agent for Docker hosts (linux, static): dist/envjupyter-sidecar (GOARCH=arm64 for Graviton)
GOARCH ?= amd64
sidecar:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '-s -w' -o dist/envjupyter-sidecar ./sidecar

prepare:
	bash infra/local/prepare.sh

lint:
	bash infra/ci/lint-template.sh

## web: the console: npm packages from the lock file, unit tests, build into web/dist
web:
	cd web && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; } && npm test && npm run build

## invoke: run a function of the running stack on a sample event, e.g.
##   make invoke FN=api EVENT=events/api/status.json
invoke:
	go run ./infra/devstack/cmd/devstack -root . invoke $(FN) $(EVENT)
