# tenantplane — `make` lists the targets. The two that matter: `make run` and `make test`.

SHELL := /bin/bash
GO ?= go
STATICCHECK_VERSION := v0.8.2
# Services the test suite needs; `make test` starts them all and stops them after.
TEST_SERVICES := --pg --pg2 --redis --opensearch --chromium

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## start (or reuse) the local Postgres under .data/, apply migrations and serve on :8000
	@scripts/run.sh

.PHONY: stop
stop: ## stop the local Postgres cluster that `make run` started (its data stays in .data/)
	@scripts/pg.sh stop .data/pg

.PHONY: test
test: ## start every service the tests need (two Postgres clusters, Redis, OpenSearch), run all tests, stop the services
	@scripts/test-services.sh $(TEST_SERVICES) -- $(GO) test -race -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory chart

# The chart's rendering test is a Go module of its own (charts/tenantplane/test), so the
# Helm library stays out of the main go.mod; `go test ./...` above does not descend into it.
.PHONY: chart
chart: ## render the Helm chart and compare it with its golden files (to rewrite them: cd charts/tenantplane/test && go test -update)
	cd charts/tenantplane/test && $(GO) test -count=1 ./...

.PHONY: bench
bench: ## run the benchmarks and load programs against real services and print a report
	@scripts/test-services.sh --pg --redis --opensearch -- scripts/bench.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: build
build: ## build bin/tenantplane
	$(GO) build -o bin/tenantplane ./cmd/tenantplane
