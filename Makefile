# mxdetour: two daemons for Postfix. `make run` starts both on their
# embedded defaults; `make test` runs every test, end-to-end ones included.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test test-faults bench fuzz lint fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mxdetour-policyd ./policyd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mxdetour-milter ./milter

# Both daemons in the foreground on embedded defaults (no config file needed):
# policy 127.0.0.1:10040, socketmap 127.0.0.1:10041, milter 127.0.0.1:10042.
# Ctrl-C (or SIGTERM to make) stops both, each draining as under systemd, and
# ends quietly; the signal goes to the two daemons only, never to make's
# process group. When one daemon exits on its own (an address in use), the
# other is stopped and make fails with the first one's status. bash for
# wait -n.
run: SHELL := /bin/bash
run: build
	@$(BIN)/mxdetour-policyd & policyd=$$!; \
	$(BIN)/mxdetour-milter & milter=$$!; \
	trap 'kill $$policyd $$milter 2>/dev/null; wait; exit 0' INT TERM; \
	wait -n; status=$$?; \
	kill $$policyd $$milter 2>/dev/null; wait; exit $$status

# Every test, with the race detector. The end-to-end suite under test/ drives
# a real Postfix; it needs root and the packages .ci/run installs.
# The patched go-milter (third_party/go-milter, its own module) runs its own
# suite too, with our patches' tests; without -race, which reports a data
# race upstream has in ClientSession.Close (MXDETOUR-PATCHES.md).
# The suites under test/ build the daemons when they run, so go's test
# cache cannot see a change to them: those always run (-count=1).
test:
	$(GO) test -race -timeout 20m $$($(GO) list ./... | grep -v '/test/')
	$(GO) test -race -timeout 20m -count=1 ./test/...
	cd third_party/go-milter && $(GO) test -timeout 10m ./...

# Every fuzz target in the module, one after the other, FUZZTIME each (go
# test runs one fuzz target at a time). Targets are found by name, so a new
# `func FuzzX` in any *_test.go is picked up; new crashers land in the
# package's testdata/fuzz/ and then run with every `make test`. Go 1.26's
# fuzz coordinator may fail a run at the end of -fuzztime with a bare
# "context deadline exceeded" (go.dev/issue/75804): that, without a failing
# input written, is reported and not counted as a failure.
FUZZTIME ?= 30s
fuzz:
	@failed=; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for t in $$(grep -rn --include='*_test.go' --exclude-dir=vendor --exclude-dir=third_party --exclude-dir=.git '^func Fuzz' . | \
		sed -E 's|^\./(.*)/[^/]*_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]*).*|\1:\2|' | sort); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz ./$$pkg $$name ($(FUZZTIME))"; \
		if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg >$$out 2>&1; then \
			grep -v '^fuzz: elapsed' $$out; \
		elif ! grep -q 'Failing input written' $$out && grep -q '^    context deadline exceeded$$' $$out; then \
			echo "  (go.dev/issue/75804: stopped with \"context deadline exceeded\", no failing input; not a failure)"; \
		else \
			cat $$out; failed="$$failed ./$$pkg:$$name"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz failures:$$failed"; exit 1; fi

# The fault matrix of test/e2e (issue #11): Postfix under steady load while
# each part fails and comes back; a few minutes, root and Postfix needed.
test-faults:
	MXDETOUR_FAULTS=1 $(GO) test -race -timeout 20m -run 'TestFaultMatrix' -v ./test/e2e/

# The real-server suite: Debian 12 booted with systemd in systemd-nspawn,
# this checkout's package installed the admin's way, Postfix and both
# daemons under their units (root; test/realserver/run.sh says more).
.PHONY: test-realserver
test-realserver:
	bash test/realserver/run.sh

# Go benchmarks; the load tools under test/ are described in README.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN)

# Debian and RPM packages with nfpm, version from git.
NFPM := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKGVERSION ?= $(shell v=$$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//'); \
	if [ -n "$$v" ]; then echo "$$v"; else echo "0.0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d).$$(git rev-parse --short HEAD)"; fi)

.PHONY: deb rpm packages
# /etc/mxdetour/mxdetour.toml is contrib/mxdetour.toml with the three
# listen keys on the socket units' unix sockets (packaging/packaged-toml.sh).
packages: build
	mkdir -p dist/build
	sh packaging/packaged-toml.sh contrib/mxdetour.toml > dist/build/mxdetour.toml.tmp
	mv dist/build/mxdetour.toml.tmp dist/build/mxdetour.toml
	for m in packaging/man/*; do gzip -9nc $$m > dist/build/$$(basename $$m).gz; done
	gzip -9nc packaging/debian.changelog > dist/build/changelog.Debian.gz

deb: packages
	MXDETOUR_VERSION=$(PKGVERSION) $(GO) run $(NFPM) package -f packaging/nfpm.yaml -p deb -t dist/

rpm: packages
	MXDETOUR_VERSION=$(PKGVERSION) $(GO) run $(NFPM) package -f packaging/nfpm.yaml -p rpm -t dist/
