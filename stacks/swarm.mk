# Swarm targets, included by the root Makefile. `make help` lists them.
#
# Nothing here sleeps to wait for something: every wait polls a condition
# against a deadline (stacks/swarm-wait.sh), and fails loudly when it passes.

SWARM_STACK ?= shoal
STACK_FILE ?= stacks/shoal.yml
# OBSERVABILITY=1 deploys stacks/observability.yml on top (pulls public images).
OBSERVABILITY ?=
IMAGE ?= shoal
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Overlay subnet; blockstore tasks advertise their address inside it.
SHOAL_SUBNET ?= 10.231.0.0/20
SWARM_TIMEOUT ?= 180
IMAGE_CTX := bin/image
# Present while the swarm on this host is one that swarm-up created.
SWARM_MARK := bin/.swarm-created-by-shoal
DOCKER_LOG ?= /var/log/shoal-dockerd.log

STACK_FILES := -c $(STACK_FILE) $(if $(OBSERVABILITY),-c stacks/observability.yml)
STACK_ENV := SHOAL_IMAGE=$(IMAGE):$(VERSION) SHOAL_STACK=$(SWARM_STACK) SHOAL_SUBNET=$(SHOAL_SUBNET) \
  SHOAL_CONFIG_HASH=$$(sha256sum stacks/config/shoal.yaml | cut -c1-12)

# Swarm secrets of a stack (stacks/shoal.yml: secrets), each 32 random bytes
# in hex, created when absent and never stored in the image or the config.
SWARM_SECRETS := dedup-master s3-signing nbd-signing

.PHONY: plugin deps-docker images swarm-up swarm-down swarm-scale swarm-status swarm-access-key test-swarm

deps-docker: ## install docker.io and start dockerd when absent (idempotent)
	@command -v dockerd >/dev/null || { echo "installing docker.io"; $(APT_GET) update && $(APT_GET) install docker.io; }
	@if ! docker info >/dev/null 2>&1; then \
	  if [ -n "$$DOCKER_HOST" ]; then echo "docker at DOCKER_HOST=$$DOCKER_HOST is not answering"; exit 1; fi; \
	  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then \
	    systemctl start docker; \
	  else \
	    echo "starting dockerd (log: $(DOCKER_LOG))"; \
	    setsid nohup dockerd >$(DOCKER_LOG) 2>&1 </dev/null & \
	  fi; \
	  stacks/swarm-wait.sh docker 60 || { tail -20 $(DOCKER_LOG); exit 1; }; \
	fi

images: deps-docker ## build the $(IMAGE):$(VERSION) image (FROM scratch, static binary)
	@rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX)/data
	@# Stripped and trimmed: a third smaller, and the image needs no debug info.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(IMAGE_CTX)/shoal ./services/cmd/shoal
	@if [ -r /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CTX)/; else : > $(IMAGE_CTX)/ca-certificates.crt; fi
	DOCKER_BUILDKIT=0 docker build -q -f stacks/Dockerfile -t $(IMAGE):$(VERSION) $(IMAGE_CTX)
	@docker image inspect -f 'image $(IMAGE):$(VERSION) {{.Size}} bytes' $(IMAGE):$(VERSION)

# The Docker volume plugin, a managed plugin: a root file system holding
# the static binary, and stacks/plugin/config.json, which asks for what
# swarm services cannot have (CAP_SYS_ADMIN, /dev/fuse, a propagated mount).
PLUGIN ?= shoal
PLUGIN_CTX := bin/plugin
plugin: deps-docker ## build and install the Docker volume plugin $(PLUGIN):$(VERSION) (disabled; see stacks/README.md)
	@rm -rf $(PLUGIN_CTX) && mkdir -p $(PLUGIN_CTX)/rootfs/usr/local/bin $(PLUGIN_CTX)/rootfs/run/docker/plugins \
	  $(PLUGIN_CTX)/rootfs/mnt/volumes $(PLUGIN_CTX)/rootfs/var/lib/shoal $(PLUGIN_CTX)/rootfs/tmp \
	  $(PLUGIN_CTX)/rootfs/dev $(PLUGIN_CTX)/rootfs/proc $(PLUGIN_CTX)/rootfs/sys $(PLUGIN_CTX)/rootfs/etc
	@chmod 1777 $(PLUGIN_CTX)/rootfs/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(PLUGIN_CTX)/rootfs/usr/local/bin/shoal ./services/cmd/shoal
	@cp stacks/plugin/config.json $(PLUGIN_CTX)/
	@docker plugin rm -f $(PLUGIN):$(VERSION) >/dev/null 2>&1 || true
	docker plugin create $(PLUGIN):$(VERSION) $(PLUGIN_CTX)

swarm-up: images ## single-node swarm (created if none), deploy $(SWARM_STACK), wait until every tier is healthy
	@state=$$(docker info -f '{{.Swarm.LocalNodeState}}'); \
	if [ "$$state" != active ]; then \
	  docker swarm init --advertise-addr 127.0.0.1 >/dev/null && mkdir -p bin && touch $(SWARM_MARK) && echo "swarm initialised (swarm-down will leave it)"; \
	fi
	@for s in $(SWARM_SECRETS); do \
	  docker secret inspect $(SWARM_STACK)_$$s >/dev/null 2>&1 || \
	  { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | docker secret create $(SWARM_STACK)_$$s - >/dev/null && \
	    echo "secret $(SWARM_STACK)_$$s created"; } || exit 1; \
	done
	$(STACK_ENV) docker stack deploy --resolve-image never $(STACK_FILES) $(SWARM_STACK)
	@start=$$(date +%s); stacks/swarm-wait.sh healthy $(SWARM_TIMEOUT) $(SWARM_STACK) && \
	  echo "stack $(SWARM_STACK) healthy after $$(( $$(date +%s) - start ))s; try: make swarm-status"

swarm-status: ## cluster view from a client container on the stack's network
	@# The image the stack runs, which is not $(VERSION) once HEAD has moved.
	@img=$$(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' $(SWARM_STACK)_placement) && \
	  docker run --rm --pull never --network $(SWARM_STACK)_net $$img status -placement placement:7100

swarm-access-key: ## create an S3 access key (prints AWS_ACCESS_KEY_ID=/AWS_SECRET_ACCESS_KEY=)
	@# Inside a running S3 task: the signing key is a swarm secret, which only
	@# service tasks can read, not a `docker run` client.
	@c=$$(docker ps -q --filter label=com.docker.swarm.service.name=$(SWARM_STACK)_s3 | head -1); \
	  test -n "$$c" || { echo "no running $(SWARM_STACK)_s3 task on this node"; exit 1; }; \
	  docker exec $$c /usr/local/bin/shoal s3 key create -placement placement:7100 -key-file /run/secrets/s3-signing $(if $(S3_USER),-user $(S3_USER))

swarm-scale: ## scale one tier: make swarm-scale TIER=blockstore N=6
	@test -n "$(TIER)" -a -n "$(N)" || { echo "usage: make swarm-scale TIER=blockstore|placement|dedup|s3 N=<replicas>"; exit 2; }
	@case "$(TIER)" in nats*) echo "NATS is three fixed members (nats1..3); add a member to the stack file instead"; exit 2;; esac
	docker service scale --detach $(SWARM_STACK)_$(TIER)=$(N)
	@stacks/swarm-wait.sh healthy $(SWARM_TIMEOUT) $(SWARM_STACK)

swarm-down: ## remove the stack and its volumes, network and secrets; leave the swarm if swarm-up created it
	@if docker info >/dev/null 2>&1; then \
	  docker stack rm $(SWARM_STACK) >/dev/null 2>&1 || true; \
	  stacks/swarm-wait.sh gone $(SWARM_TIMEOUT) $(SWARM_STACK); \
	  : "the keys go with the volumes: data sealed with them is gone now"; \
	  for s in $(SWARM_SECRETS); do docker secret rm $(SWARM_STACK)_$$s >/dev/null 2>&1 || true; done; \
	  if [ -e $(SWARM_MARK) ]; then \
	    docker swarm leave --force >/dev/null && rm -f $(SWARM_MARK) && echo "left the swarm swarm-up created"; \
	    : "swarm init made docker_gwbridge; it stays unless removed (fails harmlessly if in use)"; \
	    docker network rm docker_gwbridge >/dev/null 2>&1 || true; \
	  fi; \
	fi

test-swarm: ## swarm e2e suite: fresh stack on a single-node swarm, scale, kill, tracing
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 15m ./e2e/swarm/
