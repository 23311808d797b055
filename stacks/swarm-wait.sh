#!/usr/bin/env bash
# swarm-wait.sh MODE TIMEOUT_SECONDS [STACK] — poll until a condition holds,
# or fail with what is still wrong when the deadline passes. Used by
# stacks/swarm.mk so that no target waits with a blind sleep.
#
#   docker  the docker daemon answers
#   healthy every service of STACK runs all its replicas, no task of it is
#           starting or unhealthy
#   gone    STACK's services and containers are gone; then its volumes and
#           networks are removed (docker stack rm leaves volumes behind and
#           removes networks only once their containers are gone)
set -u
mode=$1 timeout=$2 stack=${3:-}
deadline=$(( $(date +%s) + timeout ))
ns="label=com.docker.stack.namespace=$stack"

# The check prints what it is waiting for and fails while there is something.
check_docker() { docker info >/dev/null 2>&1 || { echo "docker daemon not answering"; return 1; }; }

check_healthy() {
  local svcs bad=""
  svcs=$(docker service ls --filter "$ns" --format '{{.Name}} {{.Replicas}}')
  [ -n "$svcs" ] || { echo "no services in stack $stack"; return 1; }
  while read -r name reps; do
    # "3/3", or "2/3 (max 1 per node)": running/desired.
    reps=${reps%% *}
    [ "${reps%/*}" = "${reps#*/}" ] && [ "${reps#*/}" != 0 ] || bad="$bad $name=$reps"
  done <<<"$svcs"
  local waiting
  waiting=$(docker ps --filter "$ns" --format '{{.Names}} {{.Status}}' | grep -E 'health: starting|unhealthy' | cut -d' ' -f1)
  [ -z "$bad$waiting" ] || { echo "waiting for:$bad" $waiting; return 1; }
}

check_gone() {
  local left
  left="$(docker service ls -q --filter "$ns")$(docker ps -aq --filter "$ns")"
  [ -z "$left" ] || { echo "stack $stack still has services or containers"; return 1; }
  docker volume ls -q --filter "$ns" | xargs -r docker volume rm -f >/dev/null
  docker network ls -q --filter "$ns" | xargs -r docker network rm >/dev/null 2>&1
  left="$(docker volume ls -q --filter "$ns")$(docker network ls -q --filter "$ns")"
  [ -z "$left" ] || { echo "stack $stack still has volumes or networks"; return 1; }
}

last=""
until msg=$("check_$mode" 2>&1); do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "swarm-wait: $mode not reached within ${timeout}s: $msg" >&2
    [ "$mode" = healthy ] && docker service ps --no-trunc --filter desired-state=running \
      $(docker service ls -q --filter "$ns") >&2 2>/dev/null
    exit 1
  fi
  [ "$msg" = "$last" ] || echo "  $msg"
  last=$msg
  sleep 1 # poll interval, not a synchronisation
done
