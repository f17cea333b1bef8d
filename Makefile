# wakegate — see README.md. Two commands matter on a fresh machine:
#   make demo   builds everything and shows the main job end to end
#   make test   runs every test (real BuildKit and Dagger included)

GO  ?= go
BIN := $(CURDIR)/bin
# BuildKit's version is pinned in tools/buildkit/go.mod, buildx's in tools/buildx/go.mod.
BUILDKIT_BINS := $(BIN)/buildkitd $(BIN)/buildctl
GO_SOURCES := $(shell find . -name '*.go' -not -path './tools/*' -not -path './.demo/*') go.mod go.sum

export WAKEGATE_BUILDKITD := $(BIN)/buildkitd
export WAKEGATE_BUILDCTL  := $(BIN)/buildctl
export WAKEGATE_BUILDX    := $(BIN)/buildx
export WAKEGATE_DAGGER_BIN := $(BIN)/dagger

# Dagger's engine, CLI, init and CNI plugin, built from its source elsewhere
# (the module proxy does not serve github.com/dagger/dagger): a tarball
# found at $WAKEGATE_DAGGER_TARBALL, else beside the repository in
# ../shared/dagger, else /work/shared/dagger, checked against this checksum.
DAGGER_SHA256  := 00e6f40cf3607ad7a2711e8d0d3bde869e4170a765bc151da856392cd660605e
DAGGER_TARBALL := $(firstword $(WAKEGATE_DAGGER_TARBALL) $(wildcard $(CURDIR)/../shared/dagger/dagger-bin.tar.xz) $(wildcard /work/shared/dagger/dagger-bin.tar.xz))
DAGGER_STAMP   := $(BIN)/dagger/.sha256-$(DAGGER_SHA256)

.PHONY: all build tools deps dagger demo demo-dagger test vet fmt-check bench bench-peers soak clean

all: build

build: $(BIN)/wakegate

# -buildvcs=auto: the revision goes into the binary ('wakegate version')
# even where GOFLAGS turns VCS stamping off.
$(BIN)/wakegate: $(GO_SOURCES)
	$(GO) build -buildvcs=auto -o $@ ./cmd/wakegate

# buildkitd and buildctl from the Go module proxy, built in a small tools
# module (buildkit's own go.mod has exclude directives that refuse go install).
tools: $(BUILDKIT_BINS) $(BIN)/buildx

$(BUILDKIT_BINS) &: tools/buildkit/go.mod tools/buildkit/go.sum
	cd tools/buildkit && $(GO) build -o $(BIN)/ github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl

# buildx likewise, in its own tools module (its dependencies differ from
# buildkitd's); used with buildkitd through its remote driver, no Docker.
$(BIN)/buildx: tools/buildx/go.mod tools/buildx/go.sum
	cd tools/buildx && $(GO) build -o $(BIN)/ github.com/docker/buildx/cmd/buildx

# runc, busybox-static, and what Dagger's engine needs (dnsmasq-base,
# iptables, containernetworking-plugins; xz-utils to unpack it), and
# postgresql for the tests' throwaway clusters, from Debian's packages, when
# missing.
deps:
	scripts/install-deps.sh

# Dagger's binaries into bin/dagger (dagger-engine, dagger-init, dnsname and
# the dagger CLI), checked against DAGGER_SHA256.
dagger: $(DAGGER_STAMP)

$(DAGGER_STAMP): | deps
	@if [ -z "$(DAGGER_TARBALL)" ] || [ ! -f "$(DAGGER_TARBALL)" ]; then \
	  echo "Dagger's binaries: no dagger-bin.tar.xz at \$$WAKEGATE_DAGGER_TARBALL ($(WAKEGATE_DAGGER_TARBALL)), $(CURDIR)/../shared/dagger or /work/shared/dagger;" >&2; \
	  echo "  set WAKEGATE_DAGGER_TARBALL=/path/to/dagger-bin.tar.xz (sha256 $(DAGGER_SHA256))" >&2; exit 1; fi
	@echo "$(DAGGER_SHA256)  $(DAGGER_TARBALL)" | sha256sum -c --quiet - || { \
	  echo "$(DAGGER_TARBALL): checksum differs from DAGGER_SHA256 in the Makefile; refusing to unpack it" >&2; exit 1; }
	rm -rf $(BIN)/dagger $(BIN)/dagger.tmp && mkdir -p $(BIN)/dagger.tmp
	tar -xJf $(DAGGER_TARBALL) -C $(BIN)/dagger.tmp
	mv $(BIN)/dagger.tmp/dagger $(BIN)/dagger && rmdir $(BIN)/dagger.tmp
	touch $@

demo: build $(BUILDKIT_BINS) deps
	scripts/demo.sh

# The demo's story with a Dagger engine and the dagger CLI.
demo-dagger: build deps dagger
	scripts/demo-dagger.sh

test: build tools deps dagger vet fmt-check
	$(GO) test -race -count=1 -timeout 12m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# A long run of mixed builds, idle stops, wakes, rotations and attacks (not
# part of 'make test'): reports failed builds (must be 0), RSS and goroutines.
SOAK ?= 5m
soak: build tools deps
	$(GO) test -tags soak -count=1 -v -run '^TestSoak$$' -timeout 2h ./cmd/wakegate -args -soak $(SOAK)

bench: build tools deps
	$(GO) test -run '^$$' -bench . -benchmem ./...

# wakegate's path beside stunnel → haproxy and raw TCP, in one run (installs
# stunnel4, haproxy and linux-perf when missing); writes bench/latest.txt, quoted by
# docs/performance.md. Not part of 'make test'.
bench-peers:
	scripts/bench-peers.sh

clean:
	rm -rf $(BIN) .demo .demo-dagger
