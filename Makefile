# CNI-Genie build entry points. `make demo` and `make test` work on a fresh
# Debian machine with Go: they install what they need first (as root).
GO        ?= go
OUT       := _output
BIN       := $(OUT)/bin
BINARIES  := genie genied geniectl
TEST_TIMEOUT ?= 40m

.PHONY: fmt-check all build deps test-bins generate verify-generate manifests verify-manifests image test test-unit demo bench fuzz clean

all: build

# genie runs once per CNI call, so its start-up is paid on every ADD and DEL:
# a static binary (CGO_ENABLED=0: no dynamic loader, no glibc start-up, which
# probes the CPU with CPUID, a trap under a hypervisor) without symbol tables
# starts about 1 ms sooner (see docs/genie.md, "Cost per call"). The
# reference CNI plugins are built the same way upstream.
GENIE_BUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'

## build: the three product binaries into _output/bin
build:
	@mkdir -p $(BIN)
	$(GENIE_BUILD) -o $(BIN)/genie ./cmd/genie
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(filter-out genie,$(BINARIES)))

## deps: system packages (clang, bpftool, iproute2, iperf3, ...) and bpffs
deps:
	hack/install-deps.sh

## test-bins: kube-apiserver, etcd, cnitool and the CNI reference plugins, from the Go module proxy
test-bins:
	hack/build-test-bins.sh

## generate: rebuild the BPF objects with bpf2go (needs clang)
generate:
	$(GO) generate ./pkg/datapath/...

## fmt-check: fail if any Go file is not gofmt'ed
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

## verify-generate: regenerate and fail if the committed objects differ
verify-generate: generate
	git diff --exit-code -- pkg/datapath bpf

## manifests: copy deploy/crds and deploy/policy into the Helm chart and render deploy/manifests (needs helm: make test-bins)
manifests:
	hack/sync-chart.sh

## verify-manifests: fail if the chart's copies or the rendered manifests are stale
verify-manifests: manifests
	git diff --exit-code -- deploy
	@test -z "$$(git status --porcelain -- deploy)" || { git status --porcelain -- deploy; exit 1; }

## image: the cni-genie image (and the real-node tests' pause and busybox) as docker-save tarballs in _output/image
image:
	$(GO) run ./hack/images/build -out $(OUT)/image -busybox $(BIN)/busybox

## test: everything CI runs (privileged tests need root; fuzz seeds run as tests)
test: deps test-bins build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# the e2e suite once more on a flat underlay (the run above is routed)
	GENIE_E2E_UNDERLAY=flat $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./test/e2e

## test-unit: only the tests that need no root and no test binaries
test-unit:
	$(GO) test -count=1 -short ./...

## demo: the sandbox demo (3 nodes, two overlapping VPCs, a multihomed pod)
demo: deps test-bins build
	$(BIN)/geniectl sandbox demo --cni-bin-dir $(OUT)/cni/bin

## bench: data-plane and CNI benchmarks (see BENCHMARKS.md)
bench: deps test-bins build
	hack/bench.sh

clean:
	rm -rf $(OUT)
