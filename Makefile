# wakegate — see README.md. Two commands matter on a fresh machine:
#   make demo   builds everything and shows the main job end to end
#   make test   runs every test (real BuildKit included)

GO  ?= go
BIN := $(CURDIR)/bin
# BuildKit's version is pinned in tools/buildkit/go.mod, buildx's in tools/buildx/go.mod.
BUILDKIT_BINS := $(BIN)/buildkitd $(BIN)/buildctl
GO_SOURCES := $(shell find . -name '*.go' -not -path './tools/*' -not -path './.demo/*') go.mod go.sum

export WAKEGATE_BUILDKITD := $(BIN)/buildkitd
export WAKEGATE_BUILDCTL  := $(BIN)/buildctl
export WAKEGATE_BUILDX    := $(BIN)/buildx

.PHONY: all build tools deps demo test vet fmt-check bench soak clean

all: build

build: $(BIN)/wakegate

$(BIN)/wakegate: $(GO_SOURCES)
	$(GO) build -o $@ ./cmd/wakegate

# buildkitd and buildctl from the Go module proxy, built in a small tools
# module (buildkit's own go.mod has exclude directives that refuse go install).
tools: $(BUILDKIT_BINS) $(BIN)/buildx

$(BUILDKIT_BINS) &: tools/buildkit/go.mod tools/buildkit/go.sum
	cd tools/buildkit && $(GO) build -o $(BIN)/ github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl

# buildx likewise, in its own tools module (its dependencies differ from
# buildkitd's); used with buildkitd through its remote driver, no Docker.
$(BIN)/buildx: tools/buildx/go.mod tools/buildx/go.sum
	cd tools/buildx && $(GO) build -o $(BIN)/ github.com/docker/buildx/cmd/buildx

# runc and busybox-static from Debian's packages, when missing.
deps:
	scripts/install-deps.sh

demo: build $(BUILDKIT_BINS) deps
	scripts/demo.sh

test: build tools deps vet fmt-check
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

clean:
	rm -rf $(BIN) .demo
