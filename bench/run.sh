#!/usr/bin/env bash
# bench/run.sh: the wrk half of `make bench` (bench/README.md). Installs wrk,
# nginx and haproxy when missing, builds the binaries, then runs the Go
# harness (bench/harness), which does the measuring. Arguments go to the
# harness:
#   bash bench/run.sh -rounds 1 -duration 5s -rows bare,strangler-split
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'bench: %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -x /usr/sbin/nginx ]] || missing+=(nginx)
[[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
if ((${#missing[@]} > 0)); then
	[[ $(id -u) -eq 0 ]] || { log "missing ${missing[*]}: run as root or apt-get install them"; exit 1; }
	log "installing ${missing[*]}"
	# The packages start system services on ports 80 and 8080 unless a
	# policy-rc.d forbids it; the harness runs its own, so forbid it for the
	# install when the machine has no policy of its own.
	policy=/usr/sbin/policy-rc.d added_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
	fi
	rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >&2 || rc=$?
	[[ -z $added_policy ]] || rm -f "$policy"
	((rc == 0)) || { log "apt-get install ${missing[*]} failed (exit $rc)"; exit 1; }
fi

# bin/strangler and bin/legacyorders (make build), unless the caller points
# the harness at other builds (STRANGLER_BIN, LEGACYORDERS_BIN).
if [[ -z ${STRANGLER_BIN:-} || -z ${LEGACYORDERS_BIN:-} ]]; then
	make -s build >&2
fi
mkdir -p bin/bench
go build -o bin/bench/ ./bench/harness ./bench/bareproxy ./bench/fastproxy
exec bin/bench/harness "$@"
