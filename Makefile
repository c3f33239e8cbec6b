# strangler: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run run-pg test lint bench dashboards dashboards-check clean
.PHONY: image image-test release

all: build

build: ## bin/strangler, bin/neworders, bin/legacyorders
	@mkdir -p bin
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

run: build ## the demo: legacy simulator, proxy and traffic, no setup
	./bin/strangler demo

run-pg: build ## the demo on a throwaway local Postgres (installed with apt when missing)
	bash .ci/testdb.sh bash -c 'DATABASE_URL="$$STRANGLER_TEST_DATABASE_URL" exec ./bin/strangler demo'

# test runs the suite against a throwaway Postgres cluster that
# .ci/testdb.sh starts (and removes, whatever the outcome).
test: ## everything, with the race detector; installs what is missing
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	bash .ci/prometheus.sh
	bash .ci/chromium.sh
	STRANGLER_REQUIRE_BROWSER=1 bash .ci/testdb.sh $(GO) test -race -count=1 -timeout 8m ./...
	@# Every benchmark once, so that make bench cannot rot unseen, and the
	@# allocation budget, which the race detector's pools would blur.
	bash .ci/testdb.sh $(GO) test -run '^TestAllocationBudget$$' -bench . -benchtime 1x -timeout 5m ./...
	@# The image, built with buildah (installed when missing) and run with
	@# podman where this machine can run containers; it skips, saying why,
	@# where buildah cannot be installed or store images.
	$(MAKE) image-test

dashboards: ## writes dashboards/*.json from their Go definitions (dashboards/internal/gen)
	$(GO) run ./dashboards/cmd/gen -dir dashboards

dashboards-check: ## promtool on the rules, then every panel and alert query against a real Prometheus scraping the demo
	bash dashboards/check.sh

lint: ## gofmt, go vet, staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: build ## proxies and peers under wrk, one table; Go benchmarks of the hot path
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/ ./proxy/diff/ ./router/ ./cmd/internal/service/
	bash bench/run.sh

clean:
	rm -rf bin

# image builds localhost/strangler:$(VERSION) with buildah from scratch,
# pulling nothing (deploy/image.sh; the Dockerfile is the same image for
# Docker users), then checks it: its config, and `strangler version` run
# in it by podman where this machine can run containers.
image: ## the container image, with buildah (installed when missing); kept as localhost/strangler:$(VERSION)
	STRANGLER_IMAGE_TEST=1 STRANGLER_IMAGE_VERSION=$(VERSION) $(GO) test -v -count=1 -run '^TestImage$$' ./deploy/

image-test: ## the same into a throwaway tag, removed afterwards
	STRANGLER_IMAGE_TEST=1 $(GO) test -v -count=1 -run '^TestImage$$' ./deploy/

release: ## dist/strangler_$(VERSION)_linux_{amd64,arm64}.tar.gz and dist/SHA256SUMS, static, checked
	bash deploy/release.sh $(VERSION)
	STRANGLER_RELEASE_DIR=$(CURDIR)/dist STRANGLER_RELEASE_VERSION=$(VERSION) $(GO) test -count=1 -run '^TestRelease$$' ./deploy/
