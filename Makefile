# Shoal — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
MODULES := ./proto/... ./shared/... ./services/... ./e2e/...
BIN := bin/shoal
DATA ?= ./data
TOOLS := $(CURDIR)/bin/tools
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOLANGCI_VERSION := v2.5.0
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -qq

.PHONY: help build run test test-unit test-e2e bench lint vet proto verify clean deps-test

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/shoal (static)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./services/cmd/shoal

run: build ## run the all-in-one cluster, data under $(DATA)
	$(BIN) serve -data=$(DATA)

test: build deps-test deps-docker ## unit, in-process cluster and e2e tests (what CI runs)
	$(GO) vet $(MODULES)
	@test -z "$$(gofmt -l proto shared services e2e)" || { echo "gofmt needed:"; gofmt -l proto shared services e2e; exit 1; }
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 25m $(MODULES)

test-unit: ## unit tests only
	$(GO) test -race -short -count=1 ./proto/... ./shared/... ./services/...

test-e2e: build deps-test ## end-to-end suites with the built binary
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 25m ./e2e/...

bench: build deps-test ## benchmarks: the all-in-one cluster against raw fsync'd disk, one table
	$(GO) run ./e2e/bench -bin $(BIN) $(BENCH_FLAGS)

vet: ## go vet
	$(GO) vet $(MODULES)

lint: ## golangci-lint (installed into bin/tools when missing)
	@test -x $(TOOLS)/golangci-lint || GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	cd proto && $(TOOLS)/golangci-lint run ./...
	cd shared && $(TOOLS)/golangci-lint run ./...
	cd services && $(TOOLS)/golangci-lint run ./...
	cd e2e && $(TOOLS)/golangci-lint run ./...

proto: ## regenerate gRPC code with pinned generators
	@command -v protoc >/dev/null || $(APT_GET) install protobuf-compiler
	@test -x $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION) || { GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION) && mv $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION); }
	@test -x $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) || { GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION) && mv $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION); }
	cd proto && for f in $$(find . -name '*.proto'); do \
	  protoc -I . --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION) \
	    --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) \
	    --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative $$f || exit 1; done

verify: proto ## fail if generated code is stale
	@git diff --exit-code -- proto || { echo "generated code is stale: run make proto and commit"; exit 1; }

deps-test: ## install the OS packages the tests use, when missing
	@need=""; \
	command -v fusermount3 >/dev/null || need="$$need fuse3"; \
	command -v protoc >/dev/null || need="$$need protobuf-compiler"; \
	test -x /usr/bin/aws || need="$$need awscli"; \
	command -v s3cmd >/dev/null || need="$$need s3cmd"; \
	command -v rclone >/dev/null || need="$$need rclone"; \
	/usr/bin/python3 -c 'import boto3' 2>/dev/null || need="$$need python3-boto3"; \
	command -v nbdinfo >/dev/null || need="$$need libnbd-bin"; \
	command -v qemu-img >/dev/null || need="$$need qemu-utils"; \
	command -v fio >/dev/null || need="$$need fio"; \
	dpkg -s busybox-static >/dev/null 2>&1 || need="$$need busybox-static"; \
	if [ -n "$$need" ]; then echo "installing:$$need"; $(APT_GET) update && $(APT_GET) install $$need; fi

clean: ## remove build output (not data)
	rm -rf bin

# Swarm deployment targets (images, swarm-up, swarm-down, swarm-scale, test-swarm).
-include stacks/swarm.mk
