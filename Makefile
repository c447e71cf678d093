# lab: WSL-style interop, reproduced on a stock Linux host.
# `make demo` and `make test` install what they need (scripts/deps.sh) and are safe to re-run.

GO      ?= go
BIN     := bin
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build deps test vet demo fuzz clean

all: build

deps:
	@./scripts/deps.sh

# lab-interop runs inside the guest: static, no cgo; also built for every guest
# architecture (bin/lab-interop-amd64, bin/lab-interop-arm64: lab up --arch finds them).
GUEST_ARCHES := amd64 arm64
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	for a in $(GUEST_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/lab-interop-$$a ./cmd/lab-interop || exit 1; \
	done

vet:
	$(GO) vet ./...

# LAB_REQUIRE_VM=1: a missing QEMU or guest kernel fails the VM tests instead of skipping them.
# -count=1: every test really runs (a cached pass of a VM test proves nothing about this checkout).
test: deps vet
	LAB_REQUIRE_VM=1 $(GO) test -race -count=1 -timeout 40m ./...

demo: deps build
	./$(BIN)/lab demo

# Fuzzing of every fuzz target, FUZZTIME each (make fuzz FUZZTIME=10m); one line per
# target with its execs and time. The seeds also run as part of `make test`.
FUZZTIME ?= 20s
fuzz:
	@GO='$(GO)' FUZZTIME='$(FUZZTIME)' ./scripts/fuzz.sh

clean:
	rm -rf $(BIN)
