# dmlaunch — see README.md.
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
# Fuzzing time per target in "make test"; longer runs: make fuzz FUZZTIME=10m
FUZZTIME  ?= 20s
DEMO_DIR  := .demo

.PHONY: all build test unit fuzz lint deps demo demo-gdb bench install uninstall clean xen-lab xen-test xen-bench xen-down

all: build

# Static binaries: nothing here needs cgo, and the device-model path should
# not start the dynamic loader and libc on every launch (importing net turns
# cgo on for its resolver otherwise).
export CGO_ENABLED := 0

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/dmlaunch ./cmd/dmctl

deps:
	scripts/deps.sh

# Everything CI runs: the real QEMU, gdbserver and gdb are installed first.
test: deps build lint
	$(GO) test -count=1 ./...
	$(MAKE) fuzz

# The quick loop: -short skips every test that drives a real QEMU,
# gdbserver, gdb or dpkg (realtest.Need), and the slow stress tests.
unit:
	$(GO) test -count=1 -short ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./argv

lint:
	$(GO) mod tidy -diff
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) vet -tags xenlab ./xentest
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags xenlab ./xentest

# Boot the built-in guest (512 bytes that write to COM1) under the real QEMU,
# through dmlaunch, exactly as the toolstack would start it.
demo: build
	@command -v /usr/libexec/qemu-system-i386 >/dev/null 2>&1 || scripts/deps.sh
	@mkdir -p $(DEMO_DIR)
	@$(GO) run ./internal/guest/mkguest $(DEMO_DIR)/boot.img
	@echo "== the decisions (DMLAUNCH_DRY_RUN=1):"
	@scripts/demo.sh $(DEMO_DIR) dry
	@echo "== the launch:"
	@scripts/demo.sh $(DEMO_DIR)

# The debug mode: gdb attached to the guest's QEMU, its console and monitor.
demo-gdb: build
	@command -v gdbserver >/dev/null 2>&1 && command -v gdb >/dev/null 2>&1 || scripts/deps.sh
	@rm -rf $(DEMO_DIR)/state $(DEMO_DIR)/log && mkdir -p $(DEMO_DIR)
	@$(GO) run ./internal/guest/mkguest $(DEMO_DIR)/boot.img "Hello from a Xen guest, with gdb attached to its QEMU"
	@scripts/demo-gdb.sh $(DEMO_DIR)

bench: build
	$(GO) run ./internal/benchmark/dmbench $(DMBENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./argv ./domid

# The Xen lab: Xen 4.17 and a Debian 12 dom0 in a QEMU VM, dmlaunch installed
# at its device-model path (scripts/xenlab; the README says how to use it).
XENLAB        := scripts/xenlab
XENTEST_FLAGS ?= -v -timeout 60m

xen-lab: build
	$(XENLAB) up

# End-to-end tests under the real libxl; the lab is powered off afterwards
# unless XENLAB_KEEP=1.
xen-test: build
	$(XENLAB) up
	$(GO) vet -tags xenlab ./xentest
	status=0; $(GO) test -tags xenlab -count=1 $(XENTEST_FLAGS) ./xentest || status=$$?; \
	if [ "$${XENLAB_KEEP:-0}" != 1 ]; then $(XENLAB) down; fi; exit $$status

# xl create to the guest's first COM1 line, and xl destroy: the real device
# model, dmlaunch passing through, dmlaunch in gdb mode (medians of 5).
xen-bench: build
	$(XENLAB) up
	$(GO) test -tags xenlab -count=1 -run '^$$' -bench CreateToConsole -benchtime 5x -timeout 60m ./xentest

xen-down:
	$(XENLAB) down

install: build
	scripts/install.sh

uninstall:
	scripts/uninstall.sh

clean:
	rm -rf $(BIN) $(DEMO_DIR)
