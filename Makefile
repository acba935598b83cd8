# Colony build and test entry points. Every target does its own set-up:
# `make run` and `make test` work on a fresh machine with only Go installed.

GO        ?= go
BIN       := bin/colony
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X colony/agent.Version=$(VERSION)
DATA_DIR  ?= $(CURDIR)/.colony-data
# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./agent/... ./gossip/... ./consensus/... ./cmd/... ./scaling/...

.PHONY: all build run test test-unit test-race fuzz-seed vet fmt clean image e2e bench-scale

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/colony

# A single self-bootstrapping node, API on 127.0.0.1:7070, data kept in .colony-data/.
run: build
	./$(BIN) agent --node-name dev --bind 127.0.0.1 --http-addr 127.0.0.1:7070 --data-dir $(DATA_DIR)

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The full suite: format and vet checks, every package's tests (the fuzz
# targets' seed corpora run as ordinary tests), then the concurrent packages
# again under -race. One package at a time (-p 1): the packages start real
# clusters, processes and containers, and on 2 cores running them side by
# side starves their failure detectors into false timeouts.
test: fmt vet
	@docker info >/dev/null 2>&1 || echo "NOTE: no Docker engine answers: the container tests in test/e2e and the docker provider tests will be SKIPPED"
	$(GO) test -p 1 -count=1 -timeout 20m ./...
	CGO_ENABLED=1 $(GO) test -p 1 -count=1 -race -timeout 20m $(RACE_PKGS)

# Container image FROM scratch (see Dockerfile): stage a static binary, the
# host's CA bundle and an empty data/ mount point in IMAGE_CTX, then build
# with that directory as the whole build context.
IMAGE              ?= colony:latest
IMAGE_CTX          ?= bin/image
CA_BUNDLE          ?= /etc/ssl/certs/ca-certificates.crt
DOCKER_BUILD_FLAGS ?=
image:
	rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX)/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_CTX)/colony ./cmd/colony
	cp $(CA_BUNDLE) $(IMAGE_CTX)/ca-certificates.crt
	docker build -q --label org.opencontainers.image.version=$(VERSION) $(DOCKER_BUILD_FLAGS) -t $(IMAGE) -f Dockerfile $(IMAGE_CTX)
	@docker image ls $(IMAGE)

# Only the container chaos suite (also part of `make test`; skipped without a Docker engine).
e2e:
	$(GO) test -count=1 -v -timeout 15m ./test/e2e/

# Scale harness (test/scale): N real agents in one process, as processes
# (N <= PROCS_MAX) and bare memberlist at the same N; results accumulate in
# SCALE_OUT (results.md, results.csv, *.svg). Heavy: on a shared machine run
# it under the CPU lock. Example: make bench-scale N=50,100,250 PROFILE=dense
N          ?= 50,100,250
PROFILE    ?= lan
MODES      ?= bare,colony,procs
PROCS_MAX  ?= 100
SCALE_OUT  ?= bin/scale
SCALE_ARGS ?=
bench-scale: build
	$(GO) run ./test/scale/cmd/colony-scale -n $(N) -profile $(PROFILE) -modes $(MODES) -procs-max $(PROCS_MAX) -bin $(BIN) -out $(SCALE_OUT) $(SCALE_ARGS)

clean:
	rm -rf bin $(DATA_DIR)
