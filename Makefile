# strata — see README.md.
GO      ?= go
BIN     := bin/strata
PKGS    := ./...
# The suite drives real FUSE mounts, rsync, NBD clients and qemu; CI has 2 cores.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: all build deps test race demo bench vet fmt clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/strata

deps:
	contrib/install-deps.sh test

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: deps build vet
	STRATA_BIN=$(CURDIR)/$(BIN) $(GO) test $(TESTFLAGS) $(PKGS)

# Packages with concurrency, under the race detector.
race:
	$(GO) test -race -count=1 -timeout 20m ./store/... ./layers/... ./nbd/... ./fs/...

demo: deps build
	contrib/demo.sh

# Package benchmarks (pipeline throughput, planning time, ...) then the
# side-by-side run against a plain disk, restic, borg and qemu-nbd.
bench: build
	contrib/install-deps.sh bench
	$(GO) test -run '^$$' -bench . -benchtime 512x ./store/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./store/crypt/ ./store/chunker/ ./retention/... ./layers/... ./nbd/...
	STRATA_BIN=$(CURDIR)/$(BIN) contrib/bench.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
