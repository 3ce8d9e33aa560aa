# tenantplane — `make` lists the targets. The two that matter: `make run` and `make test`.

SHELL := /bin/bash
GO ?= go
STATICCHECK_VERSION := v0.8.2
# Services the test suite needs; `make test` starts them all and stops them after.
TEST_SERVICES := --pg --pg2 --redis --opensearch --chromium --podman

# Stamped into the binary (`tenantplane version`) and the image: `git describe` without
# the leading v, so a release tagged v1.2.3 is 1.2.3, the chart's appVersion and the
# chart's default image tag.
VERSION := $(patsubst v%,%,$(shell git describe --tags --always --dirty 2>/dev/null || echo dev))
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
GO_LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
# The image `make image` builds; the chart's image.repository and default tag.
IMAGE_REPO ?= tenantplane/tenantplane
IMAGE ?= $(IMAGE_REPO):$(VERSION)
# Base image; BASE=scratch builds without pulling anything.
BASE ?= gcr.io/distroless/static-debian12:nonroot
# Empty: podman when installed, else docker.
CONTAINER_ENGINE ?=
# More flags for `podman build` / `docker build`.
IMAGE_BUILD_FLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
# Target names are coloured only on a terminal (and not under NO_COLOR): piped into a
# file or a pager, the list holds no escape codes.
help: ## list the targets
	@if [ -t 1 ] && [ -z "$${NO_COLOR:-}" ] && [ "$${TERM:-dumb}" != dumb ]; then on='\033[36m'; off='\033[0m'; else on=; off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-10s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## start (or reuse) the local Postgres under .data/, apply migrations and serve on :8000
	@scripts/run.sh

.PHONY: stop
# The cluster `make run` keeps under .data/ (another directory in tests of this target).
LOCAL_PG ?= .data/pg
stop: ## stop the local Postgres cluster that `make run` started (its data stays in .data/)
	@pid=$$(head -n 1 '$(LOCAL_PG)/postmaster.pid' 2>/dev/null || true); \
	if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null; then \
		scripts/pg.sh stop '$(LOCAL_PG)' && echo "stopped the local Postgres cluster in $(LOCAL_PG) (pid $$pid); its data stays"; \
	else \
		echo "nothing to stop: no local Postgres cluster is running in $(LOCAL_PG)"; \
	fi

.PHONY: test
test: ## start every service the tests need (two Postgres clusters, Redis, OpenSearch), run all tests, stop the services
	@scripts/test-services.sh $(TEST_SERVICES) -- $(GO) test -race -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory chart

# The chart's rendering test is a Go module of its own (charts/tenantplane/test), so the
# Helm library stays out of the main go.mod; `go test ./...` above does not descend into it.
.PHONY: chart
chart: ## render the Helm chart and compare it with its golden files (to rewrite them: cd charts/tenantplane/test && go test -update)
	cd charts/tenantplane/test && $(GO) test -count=1 ./...

# The bench's clusters get the shared_buffers of a Postgres sized for its 10,000 tenants
# (their catalogs alone are some 460 MB); the tests keep the default 128MB.
BENCH_PG_SHARED_BUFFERS ?= 1GB

.PHONY: bench
bench: ## run the benchmarks and load programs against real services and print a report
	@PG_SHARED_BUFFERS=$(BENCH_PG_SHARED_BUFFERS) scripts/test-services.sh --pg --pg2 --redis --opensearch -- scripts/bench.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: build
build: ## build bin/tenantplane
	$(GO) build -trimpath -ldflags '$(GO_LDFLAGS)' -o bin/tenantplane ./cmd/tenantplane

.PHONY: image
image: ## build the container image tenantplane/tenantplane:VERSION with podman or docker (BASE=scratch: no registry)
	@IMAGE='$(IMAGE)' BASE='$(BASE)' VERSION='$(VERSION)' COMMIT='$(COMMIT)' DATE='$(DATE)' \
		CONTAINER_ENGINE='$(CONTAINER_ENGINE)' IMAGE_BUILD_FLAGS='$(IMAGE_BUILD_FLAGS)' GO='$(GO)' scripts/image.sh

# The image test builds the image FROM scratch and runs it against a throwaway Postgres;
# `make test` runs it too, with the other tests.
.PHONY: image-test
image-test: ## build the image from scratch and run it with podman: serve, signup, SIGTERM drain
	@scripts/test-services.sh --pg --podman -- $(GO) test -count=1 -run '^TestContainerImage$$' ./cmd/tenantplane
