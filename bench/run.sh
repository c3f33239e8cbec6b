#!/usr/bin/env bash
# bench/run.sh: the harness behind `make bench` (SPEC.md §13).
#
# Starts two legacy simulators, then measures the rows in BENCH_REPEAT
# interleaved rounds: in every round each row in turn starts the proxy under
# test in front of them, drives it with wrk, and stops it. Finally it prints
# one markdown table of the per-row medians across rounds, with ratios against
# the bare httputil.ReverseProxy. Everything runs on loopback; every process it
# starts is stopped on exit.
#
# Usage (from anywhere; it works from the repository root):
#   bash bench/run.sh
#   BENCH_REPEAT=5 BENCH_DURATION=20s BENCH_CONNECTIONS=128 bash bench/run.sh
#   BENCH_TARGETS="bare strangler-split" bash bench/run.sh
#   BENCH_SLOW_SHADOW=1 bash bench/run.sh   # also the slow-shadow isolation check and soak
#
# Adding a row: write a run_<key> function that starts what it needs, calls
# bench_target "row name" URL, and stops what it started; then add <key> to
# ALL_TARGETS below. See run_nginx_split for the pattern. The function runs
# once per round, so it must start from nothing and leave nothing behind.
set -euo pipefail

# The request every row sends: ord_1..ord_10 are seeded by legacy.DefaultSeed
# (legacy/seed.go, docs/order-api.md) in every legacyorders at start.
BENCH_PATH=${BENCH_PATH:-/orders/ord_1}
BENCH_DURATION=${BENCH_DURATION:-8s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_WARMUP=${BENCH_WARMUP:-2s}
# Rounds: every row is measured once per round, and the table reports the
# median across rounds.
BENCH_REPEAT=${BENCH_REPEAT:-3}
# How long a started process may take to become ready, in seconds.
BENCH_READY_TIMEOUT=${BENCH_READY_TIMEOUT:-20}
# shadow.max_in_flight of the strangler shadow rows: above the default 256,
# so that shadows dropped at saturation do not flatter the shadow row.
BENCH_SHADOW_MAX_IN_FLIGHT=${BENCH_SHADOW_MAX_IN_FLIGHT:-1024}
# shadow.max_in_flight of the slow-shadow check and soak: the config default,
# because bounding what a slow newpath can hold is what keeps the client
# isolated, and that is the behaviour users get.
BENCH_SLOW_MAX_IN_FLIGHT=${BENCH_SLOW_MAX_IN_FLIGHT:-256}
SHADOW_MAX_IN_FLIGHT=$BENCH_SHADOW_MAX_IN_FLIGHT
# BENCH_SLOW_SHADOW=1: the opt-in latency-isolation check (SPEC.md §13): a
# third legacyorders answering after BENCH_SLOW_LATENCY is the newpath, the
# rows SLOW_TARGETS measure strangler's client p99 with shadow 100% to it
# against shadow off, and a BENCH_SOAK_DURATION soak of shadow 100% reports
# strangler's RSS and dropped shadows.
BENCH_SLOW_SHADOW=${BENCH_SLOW_SHADOW:-}
BENCH_SLOW_LATENCY=${BENCH_SLOW_LATENCY:-2s}
# BENCH_SLOW_RATE=N: pace the slow-shadow rows and the soak at about N
# requests a second in all (wrk's delay() per connection) instead of wrk's
# usual saturating load, so that their p99 shows latency rather than
# queueing for the CPU. Unset: saturating, like every other row.
BENCH_SLOW_RATE=${BENCH_SLOW_RATE:-}
BENCH_SOAK_DURATION=${BENCH_SOAK_DURATION:-60s}

# Rows, in table order. The names are the keys of the run_<key> functions.
ALL_TARGETS="direct bare nginx-split strangler-split nginx-mirror strangler-shadow"
# The rows of the slow-shadow check: not in the default set, added by
# BENCH_SLOW_SHADOW=1 (or named in BENCH_TARGETS).
SLOW_TARGETS="strangler-slow-off strangler-slow-shadow"
BENCH_TARGETS=${BENCH_TARGETS:-$ALL_TARGETS}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
STRANGLER_BIN=${STRANGLER_BIN:-$REPO_ROOT/bin/strangler}
LEGACYORDERS_BIN=${LEGACYORDERS_BIN:-$REPO_ROOT/bin/legacyorders}

# Row names in table order, filled by bench_target on first sight.
ROW_NAMES=()
# Per row name, one "rps p50_ms p99_ms" sample per round, joined by ";".
declare -A SAMPLES=()
# Per row name, one "VmRSS_MB VmHWM_MB" pair per round, joined by ";".
declare -A RSS=()
# Per "row name/series/label value", a counter from strangler's /metrics
# summed over the row's rounds (record_shadow_metrics).
declare -A SHADOW_STATS=()
# Row names with SHADOW_STATS, in table order.
SHADOW_ROWS=()
# The current round, 1..BENCH_REPEAT.
ROUND=0
# Process groups started by this script (each child runs in its own session).
STARTED_PGIDS=()
NOTES=()

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- processes

# proc_running PID: true while PID exists and is not a zombie.
proc_running() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# start_bg NAME LOGFILE CMD...: runs CMD in its own session, so that stopping
# it also stops its children (nginx workers). Sets STARTED_PID.
# Without job control a background child is not a process-group leader, so
# setsid(1) calls setsid(2) in place and $! is the command's own pid and pgid.
start_bg() {
	local name=$1 logfile=$2
	shift 2
	setsid "$@" >"$logfile" 2>&1 </dev/null &
	STARTED_PID=$!
	STARTED_PGIDS+=("$STARTED_PID")
	log "started $name (pid $STARTED_PID, log $logfile)"
}

# stop_bg PID: SIGTERM to the process group, SIGKILL after 5 s.
stop_bg() {
	local pid=$1 i
	kill -TERM -- "-$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		proc_running "$pid" || break
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local status=$? pid
	trap - EXIT INT TERM
	for pid in "${STARTED_PGIDS[@]}"; do
		stop_bg "$pid"
	done
	if [[ -n ${BENCH_TMP:-} && -d $BENCH_TMP ]]; then
		if [[ $status -ne 0 || -n ${BENCH_KEEP_TMP:-} ]]; then
			log "logs kept in $BENCH_TMP"
		else
			rm -rf "$BENCH_TMP"
		fi
	fi
	exit "$status"
}

# show_log NAME FILE: the tail of a log, for error messages.
show_log() {
	if [[ -s $2 ]]; then
		printf -- '--- last lines of %s (%s) ---\n' "$1" "$2" >&2
		tail -n 20 "$2" >&2
	fi
}

# http_status URL [CURL ARGS...]: prints the status code, 000 when no answer.
http_status() {
	local url=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true
}

# wait_ready NAME PID LOGFILE URL WANT: polls URL until it answers with status
# WANT ("any" accepts every HTTP answer), the process dies, or the deadline.
wait_ready() {
	local name=$1 pid=$2 logfile=$3 url=$4 want=$5 code deadline
	deadline=$((SECONDS + BENCH_READY_TIMEOUT))
	while :; do
		if ! proc_running "$pid"; then
			show_log "$name" "$logfile"
			die "$name exited before it was ready"
		fi
		code=$(http_status "$url")
		if [[ $code != 000 && ($want == any || $code == "$want") ]]; then
			return 0
		fi
		if ((SECONDS >= deadline)); then
			show_log "$name" "$logfile"
			die "$name not ready after ${BENCH_READY_TIMEOUT}s: GET $url answered $code, want $want"
		fi
		sleep 0.1
	done
}

# ---------------------------------------------------------------- setup

# ensure_tools installs wrk, nginx and curl when missing (root, Debian).
ensure_tools() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
	command -v curl >/dev/null || missing+=(curl)
	command -v go >/dev/null || die "go is not on PATH; it is needed to build bench/bareproxy"
	if ((${#missing[@]} > 0)); then
		[[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root or install them with apt-get"
		command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
		log "installing ${missing[*]}"
		# The nginx package starts a system nginx on port 80 unless a
		# policy-rc.d forbids it; the bench runs its own, so forbid it while
		# installing when the machine has no policy of its own.
		local policy=/usr/sbin/policy-rc.d added_policy=''
		if [[ ! -e $policy ]]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod 755 "$policy"
			added_policy=1
		fi
		local rc=0
		{
			DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
		} >&2 || rc=$?
		[[ -z $added_policy ]] || rm -f "$policy"
		((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
	fi
	NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
}

# ensure_binaries builds bin/strangler and bin/legacyorders when missing.
ensure_binaries() {
	local need_strangler=''
	[[ " $BENCH_TARGETS " != *" strangler-"* ]] || need_strangler=1
	if [[ ! -x $LEGACYORDERS_BIN || (-n $need_strangler && ! -x $STRANGLER_BIN) ]]; then
		if [[ -f Makefile ]]; then
			log "binaries missing; running make build"
			make build >&2 || die "make build failed; fix the build, then rerun make bench"
		fi
	fi
	[[ -x $LEGACYORDERS_BIN ]] || die "$LEGACYORDERS_BIN is missing: run make build (or set LEGACYORDERS_BIN)"
	if [[ -n $need_strangler && ! -x $STRANGLER_BIN ]]; then
		die "$STRANGLER_BIN is missing: run make build (or set STRANGLER_BIN, or drop strangler-* from BENCH_TARGETS)"
	fi
}

# free_ports N: prints N distinct TCP ports no socket uses, from below the
# kernel's ephemeral range so that wrk's own client ports never collide.
# awk reads /proc/net/tcp in large blocks: bash's read, byte by byte, takes
# seconds once earlier rows have left thousands of TIME_WAIT sockets.
free_ports() {
	local want=$1 used candidate hex f
	local -a files=()
	for f in /proc/net/tcp /proc/net/tcp6; do
		[[ ! -r $f ]] || files+=("$f")
	done
	# The local ports in use, as the upper-case hex of /proc/net/tcp.
	used=" "
	if ((${#files[@]} > 0)); then
		used+=$(awk 'FNR > 1 { n = split($2, a, ":"); printf "%s ", a[n] }' "${files[@]}")
	fi
	local out=()
	while ((${#out[@]} < want)); do
		candidate=$((20000 + RANDOM % 12000))
		printf -v hex '%04X' "$candidate"
		[[ $used != *" $hex "* ]] || continue
		used+="$hex "
		out+=("$candidate")
	done
	echo "${out[*]}"
}

# ---------------------------------------------------------------- wrk

write_wrk_script() {
	# A distinct X-User-Id per request, so that sticky assignment splits
	# traffic across both upstreams just as real users would.
	cat >"$BENCH_TMP/users.lua" <<'LUA'
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local user = string.format("%d", thread_id * 1000000000 + counter)
  return wrk.format(nil, nil, { ["X-User-Id"] = user })
end
LUA
	if [[ -n $BENCH_SLOW_RATE ]]; then
		# Each connection waits connections/rate seconds between requests
		# (less whatever the answer took: about rate requests a second).
		cp "$BENCH_TMP/users.lua" "$BENCH_TMP/paced.lua"
		awk -v c="$BENCH_CONNECTIONS" -v r="$BENCH_SLOW_RATE" 'BEGIN {
			printf "\nfunction delay()\n  return %d\nend\n", c * 1000 / r
		}' >>"$BENCH_TMP/paced.lua"
	fi
}

# slow_wrk_script: the wrk script of the slow-shadow rows and the soak.
slow_wrk_script() {
	if [[ -n $BENCH_SLOW_RATE ]]; then
		echo "$BENCH_TMP/paced.lua"
	else
		echo "$BENCH_TMP/users.lua"
	fi
}

# parse_wrk FILE: prints "rps p50_ms p99_ms non2xx socket_errors".
parse_wrk() {
	awk '
	function ms(v,   n, u) {
		n = v + 0
		u = v
		sub(/^[0-9.]+/, "", u)
		if (u == "us") return n / 1000
		if (u == "ms") return n
		if (u == "s")  return n * 1000
		if (u == "m")  return n * 60000
		if (u == "h")  return n * 3600000
		return -1
	}
	/^Requests\/sec:/ { rps = $2 }
	$1 == "50%" { p50 = ms($2) }
	$1 == "99%" { p99 = ms($2) }
	/Non-2xx or 3xx responses:/ { non2xx = $NF }
	/Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
	END {
		if (rps == "" || p50 == "" || p99 == "" || p50 < 0 || p99 < 0) exit 1
		printf "%.2f %.3f %.3f %d %d\n", rps, p50, p99, non2xx, sockerr
	}' "$1"
}

# bench_target NAME URL [WRK_SCRIPT]: checks URL answers 2xx, warms it up,
# measures it with wrk (script users.lua unless WRK_SCRIPT) and records this
# round's sample of the row NAME.
bench_target() {
	local name=$1 url=$2 script=${3:-$BENCH_TMP/users.lua} code out slug
	code=$(http_status "$url" -H "X-User-Id: 1")
	[[ $code == 2* ]] || die "$name: GET $url answered $code, want 2xx (is BENCH_PATH=$BENCH_PATH a seeded order?)"

	slug=${name//[^A-Za-z0-9]/_}-r$ROUND
	local wrk_args=(-t "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -s "$script")
	log "round $ROUND/$BENCH_REPEAT: $name: warm-up $BENCH_WARMUP"
	wrk "${wrk_args[@]}" -d "$BENCH_WARMUP" "$url" >"$BENCH_TMP/wrk-$slug-warmup.txt" 2>&1 ||
		die "$name: wrk warm-up failed: $(cat "$BENCH_TMP/wrk-$slug-warmup.txt")"
	log "round $ROUND/$BENCH_REPEAT: $name: wrk --latency -d $BENCH_DURATION $url"
	wrk "${wrk_args[@]}" -d "$BENCH_DURATION" --latency "$url" >"$BENCH_TMP/wrk-$slug.txt" 2>&1 ||
		die "$name: wrk failed: $(cat "$BENCH_TMP/wrk-$slug.txt")"
	out=$(parse_wrk "$BENCH_TMP/wrk-$slug.txt") ||
		die "$name: cannot parse wrk output: $(cat "$BENCH_TMP/wrk-$slug.txt")"
	local rps p50 p99 non2xx sockerr
	read -r rps p50 p99 non2xx sockerr <<<"$out"
	log "round $ROUND/$BENCH_REPEAT: $name: $rps req/s, p50 $p50 ms, p99 $p99 ms"
	[[ -v "SAMPLES[$name]" ]] || ROW_NAMES+=("$name")
	SAMPLES[$name]+="${SAMPLES[$name]:+;}$rps $p50 $p99"
	((non2xx == 0)) || NOTES+=("$name (round $ROUND): $non2xx non-2xx/3xx responses")
	((sockerr == 0)) || NOTES+=("$name (round $ROUND): $sockerr socket errors (connect/read/write/timeout)")
}

# ---------------------------------------------------------------- upstreams

start_upstreams() {
	local -a ports
	local slow=''
	[[ " $BENCH_TARGETS " != *" strangler-slow-"* ]] || slow=1
	# All ports in one call: a port picked but not yet bound is not in use.
	read -r -a ports <<<"$(free_ports $((${slow:+2} + 4)))"
	LEGACY_PORT=${ports[0]}
	NEWPATH_PORT=${ports[2]}

	start_bg "legacy upstream" "$BENCH_TMP/legacy.log" \
		"$LEGACYORDERS_BIN" --listen "127.0.0.1:${ports[0]}" --downstream-listen "127.0.0.1:${ports[1]}"
	LEGACY_PID=$STARTED_PID
	# In this first version a second legacy simulator stands in for the
	# newpath, so both sides cost the same and only the proxies differ.
	start_bg "newpath stand-in" "$BENCH_TMP/newpath.log" \
		"$LEGACYORDERS_BIN" --listen "127.0.0.1:${ports[2]}" --downstream-listen "127.0.0.1:${ports[3]}"
	NEWPATH_PID=$STARTED_PID

	if [[ -n $slow ]]; then
		# The slow newpath of the slow-shadow check: every order API
		# request waits BENCH_SLOW_LATENCY; /healthz answers at once.
		SLOW_NEWPATH_PORT=${ports[4]}
		start_bg "slow newpath (--latency $BENCH_SLOW_LATENCY)" "$BENCH_TMP/slow-newpath.log" \
			"$LEGACYORDERS_BIN" --listen "127.0.0.1:${ports[4]}" --downstream-listen "127.0.0.1:${ports[5]}" \
			--latency "$BENCH_SLOW_LATENCY"
		SLOW_NEWPATH_PID=$STARTED_PID
	fi

	wait_ready "legacy upstream" "$LEGACY_PID" "$BENCH_TMP/legacy.log" "http://127.0.0.1:$LEGACY_PORT$BENCH_PATH" any
	wait_ready "newpath stand-in" "$NEWPATH_PID" "$BENCH_TMP/newpath.log" "http://127.0.0.1:$NEWPATH_PORT$BENCH_PATH" any
	if [[ -n $slow ]]; then
		wait_ready "slow newpath" "$SLOW_NEWPATH_PID" "$BENCH_TMP/slow-newpath.log" "http://127.0.0.1:$SLOW_NEWPATH_PORT/healthz" 200
	fi
}

# ---------------------------------------------------------------- rows

run_direct() {
	bench_target "direct legacy" "http://127.0.0.1:$LEGACY_PORT$BENCH_PATH"
}

run_bare() {
	local port pid
	port=$(free_ports 1)
	start_bg "bare proxy" "$BENCH_TMP/bareproxy.log" \
		"$BENCH_TMP/bareproxy" -listen "127.0.0.1:$port" -upstream "http://127.0.0.1:$LEGACY_PORT"
	pid=$STARTED_PID
	wait_ready "bare proxy" "$pid" "$BENCH_TMP/bareproxy.log" "http://127.0.0.1:$port$BENCH_PATH" any
	bench_target "bare httputil.ReverseProxy" "http://127.0.0.1:$port$BENCH_PATH"
	stop_bg "$pid"
}

# write_nginx_conf FILE PORT MODE: nginx in front of both upstreams.
#   split:  10% of users to the newpath by X-User-Id, the closest nginx gets
#           to strangler's sticky split;
#   mirror: every request to legacy, and a copy of it to the newpath with the
#           mirror module, whose answer nginx discards (it cannot compare).
write_nginx_conf() {
	local file=$1 port=$2 mode=$3 dir locations split=''
	dir=$(dirname "$file")
	# The upstream settings of every proxied location: HTTP/1.1 with an
	# empty Connection header keeps upstream connections alive, as
	# strangler's transport does. Single quotes: nginx variables, not bash's.
	# shellcheck disable=SC2016
	local upstream_headers='            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;'
	case $mode in
	split)
		split="
    split_clients \"\${http_x_user_id}\" \$bench_backend {
        10%     newpath;
        *       legacy;
    }
"
		locations="        location / {
            proxy_pass http://\$bench_backend;
$upstream_headers
        }"
		;;
	mirror)
		# The mirror subrequest's own URI is /mirror; $request_uri is the
		# client's. nginx reads the client's next request on a keep-alive
		# connection only once the mirror has answered, so a slow mirror
		# would slow the client; here the newpath is as fast as legacy.
		locations="        location / {
            mirror /mirror;
            mirror_request_body on;
            proxy_pass http://legacy;
$upstream_headers
        }

        location = /mirror {
            internal;
            proxy_pass http://newpath\$request_uri;
$upstream_headers
            proxy_set_header X-Strangler-Shadow 1;
        }"
		;;
	*) die "write_nginx_conf: unknown mode $mode" ;;
	esac
	cat >"$file" <<EOF
# Generated by bench/run.sh; runs in the foreground with every path in $dir.
daemon off;
master_process on;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 4096;
}

http {
    # One log line per request, as strangler writes one to stderr; the
    # upstream address shows how split_clients divided the traffic.
    log_format bench '\$remote_addr [\$time_local] "\$request" \$status '
                     '\$body_bytes_sent \$request_time \$upstream_addr';
    access_log $dir/access.log bench;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;

    upstream legacy {
        server 127.0.0.1:$LEGACY_PORT;
        keepalive 256;
    }
    upstream newpath {
        server 127.0.0.1:$NEWPATH_PORT;
        keepalive 256;
    }
$split
    server {
        listen 127.0.0.1:$port;

$locations
    }
}
EOF
}

# start_nginx CONF: checks the config with nginx -t, then runs it. Sets STARTED_PID.
start_nginx() {
	local conf=$1 dir
	dir=$(dirname "$conf")
	"$NGINX_BIN" -t -q -p "$dir" -e "$dir/error.log" -c "$conf" 2>"$dir/nginx-t.log" || {
		show_log "nginx -t" "$dir/nginx-t.log"
		die "nginx rejected $conf"
	}
	start_bg "nginx" "$dir/nginx.out" "$NGINX_BIN" -p "$dir" -e "$dir/error.log" -c "$conf"
}

# run_nginx MODE NAME: the row NAME of nginx in MODE (see write_nginx_conf).
run_nginx() {
	local mode=$1 name=$2 port dir="$BENCH_TMP/nginx-$1" pid
	mkdir -p "$dir"
	port=$(free_ports 1)
	write_nginx_conf "$dir/nginx.conf" "$port" "$mode"
	start_nginx "$dir/nginx.conf"
	pid=$STARTED_PID
	wait_ready "nginx" "$pid" "$dir/error.log" "http://127.0.0.1:$port$BENCH_PATH" any
	bench_target "$name" "http://127.0.0.1:$port$BENCH_PATH"
	stop_bg "$pid"
}

run_nginx_split() {
	run_nginx split "nginx split_clients 10%"
}

run_nginx_mirror() {
	run_nginx mirror "nginx mirror 100%"
}

# write_strangler_conf FILE PORT ADMIN_PORT NEWPATH_PORT WEIGHT SHADOW_PERCENT:
# route get-order with WEIGHT percent of users on the newpath at NEWPATH_PORT,
# and SHADOW_PERCENT of its requests also sent to the other side and compared
# field by field (without noise probes: noise_percent 0).
write_strangler_conf() {
	cat >"$1" <<EOF
listen: "127.0.0.1:$2"
admin: { listen: "127.0.0.1:$3" }
upstreams:
  legacy:  { url: "http://127.0.0.1:$LEGACY_PORT" }
  newpath: { url: "http://127.0.0.1:$4" }
sticky: { key: "header:X-User-Id", salt: "bench" }
shadow: { max_in_flight: $SHADOW_MAX_IN_FLIGHT, timeout: 5s }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: $5
    shadow: { percent: $6 }
    compare: { noise_percent: 0 }
EOF
}

# start_strangler KEY NEWPATH_PORT WEIGHT SHADOW_PERCENT: writes
# $BENCH_TMP/KEY.yaml (see write_strangler_conf), starts strangler on it with
# its log in $BENCH_TMP/KEY.log and waits for its /healthz. Sets
# STRANGLER_PID, STRANGLER_PORT and STRANGLER_ADMIN (the admin port).
start_strangler() {
	local key=$1
	read -r STRANGLER_PORT STRANGLER_ADMIN <<<"$(free_ports 2)"
	write_strangler_conf "$BENCH_TMP/$key.yaml" "$STRANGLER_PORT" "$STRANGLER_ADMIN" "$2" "$3" "$4"
	# The JSON access log goes to stderr and stays on: it is part of the cost.
	start_bg "strangler ($key)" "$BENCH_TMP/$key.log" \
		"$STRANGLER_BIN" serve --config "$BENCH_TMP/$key.yaml"
	STRANGLER_PID=$STARTED_PID
	wait_ready "strangler" "$STRANGLER_PID" "$BENCH_TMP/$key.log" "http://127.0.0.1:$STRANGLER_ADMIN/healthz" 200
}

# proc_mem PID: prints "VmRSS_MB VmHWM_MB" of PID.
proc_mem() {
	awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 }
		END { printf "%.1f %.1f\n", rss / 1024, hwm / 1024 }' "/proc/$1/status"
}

# record_rss NAME PID: records VmRSS and VmHWM of PID (in MB) after this
# round's run of the row NAME; print_table sums them up under the table.
record_rss() {
	local name=$1 pair
	pair=$(proc_mem "$2")
	RSS[$name]+="${RSS[$name]:+;}$pair"
}

# ---------------------------------------------------------------- /metrics

# metric_sums FILE METRIC LABEL: of the series METRIC{...,route="get-order",...}
# in FILE (Prometheus text format), prints "VALUE SUM" per value of LABEL,
# summed over the other labels; with LABEL empty, one line "total SUM".
metric_sums() {
	awk -v metric="$2" -v label="$3" '
	index($0, metric "{") == 1 && index($0, "route=\"get-order\"") {
		key = "total"
		if (label != "" && match($0, "[{,]" label "=\"[^\"]*\"")) {
			key = substr($0, RSTART + length(label) + 3, RLENGTH - length(label) - 4)
		}
		sum[key] += $NF
	}
	END { for (k in sum) printf "%s %.0f\n", k, sum[k] }' "$1"
}

# shadow_in_flight ADMIN_PORT: prints strangler_shadow_in_flight, -1 when
# /metrics does not answer.
shadow_in_flight() {
	{ curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
		awk '$1 == "strangler_shadow_in_flight" { v = $2 } END { printf "%d\n", (v == "" ? -1 : v) }'
}

# wait_shadows_idle ADMIN_PORT: waits until strangler has no shadow call in
# flight (each ends within about twice shadow.timeout), so that every
# comparison of the run is counted before /metrics is read.
wait_shadows_idle() {
	local deadline=$((SECONDS + 15)) n
	while :; do
		n=$(shadow_in_flight "$1")
		((n != 0)) || return 0
		if ((SECONDS >= deadline)); then
			log "still $n shadow calls in flight after 15 s; reading /metrics anyway"
			return 0
		fi
		sleep 0.2
	done
}

# record_shadow_metrics NAME ADMIN_PORT: once strangler's shadows are done,
# adds its counters of route get-order (requests, comparisons by result,
# shadow calls by outcome) to the sums of the row NAME. Each round's
# strangler starts from zero, so the sums cover all rounds, warm-ups included.
record_shadow_metrics() {
	local name=$1 file series metric value sum
	wait_shadows_idle "$2"
	file="$BENCH_TMP/metrics-${name//[^A-Za-z0-9]/_}-r$ROUND.txt"
	curl -sf --max-time 5 -o "$file" "http://127.0.0.1:$2/metrics" ||
		die "$name: GET http://127.0.0.1:$2/metrics failed"
	if [[ ! -v "SHADOW_STATS[$name/rounds]" ]]; then
		SHADOW_ROWS+=("$name")
		SHADOW_STATS[$name/rounds]=0
	fi
	SHADOW_STATS[$name/rounds]=$((${SHADOW_STATS[$name/rounds]} + 1))
	for series in strangler_requests_total: strangler_comparisons_total:result strangler_shadow_requests_total:outcome; do
		metric=${series%%:*}
		while read -r value sum; do
			[[ -n $value ]] || continue
			SHADOW_STATS[$name/$metric/$value]=$((${SHADOW_STATS[$name/$metric/$value]:-0} + sum))
		done <<<"$(metric_sums "$file" "$metric" "${series#*:}")"
	done
}

# shadow_note NAME: one line on the comparisons and shadow calls of the row
# NAME, from record_shadow_metrics.
shadow_note() {
	local name=$1 k v requests compared=0 results='' outcomes='' rounds pct
	requests=${SHADOW_STATS[$name/strangler_requests_total/total]:-0}
	for k in match mismatch noise error skipped; do
		v=${SHADOW_STATS[$name/strangler_comparisons_total/$k]:-0}
		[[ $k == error || $k == skipped ]] || compared=$((compared + v))
		results+="${results:+, }$k $v"
	done
	for k in sent dropped_saturated failed timeout dropped_body_too_large skipped_unsafe; do
		v=${SHADOW_STATS[$name/strangler_shadow_requests_total/$k]:-0}
		# The last two cannot happen on a GET without a body; shown if they do.
		[[ $v != 0 || ($k != dropped_body_too_large && $k != skipped_unsafe) ]] || continue
		outcomes+="${outcomes:+, }$k $v"
	done
	rounds=${SHADOW_STATS[$name/rounds]}
	pct=$(awk -v a="$compared" -v b="$requests" 'BEGIN { if (b == 0) print "n/a"; else printf "%.1f%%\n", 100 * a / b }')
	printf '%s: compared %s of %s requests (%s); shadow calls: %s (strangler /metrics, route get-order, %s run%s with warm-ups)\n' \
		"$name" "$pct" "$requests" "$results" "$outcomes" "$rounds" "$([[ $rounds == 1 ]] || echo s)"
}

# ---------------------------------------------------------------- strangler rows

run_strangler_split() {
	start_strangler strangler-split "$NEWPATH_PORT" 10 0
	bench_target "strangler split 10%" "http://127.0.0.1:$STRANGLER_PORT$BENCH_PATH"
	record_rss "strangler split 10%" "$STRANGLER_PID"
	stop_bg "$STRANGLER_PID"
}

# run_strangler_shadow: every request served by legacy and also sent to the
# newpath stand-in, the two JSON answers compared field by field.
run_strangler_shadow() {
	local name="strangler shadow 100%"
	start_strangler strangler-shadow "$NEWPATH_PORT" 0 100
	bench_target "$name" "http://127.0.0.1:$STRANGLER_PORT$BENCH_PATH"
	record_rss "$name" "$STRANGLER_PID"
	record_shadow_metrics "$name" "$STRANGLER_ADMIN"
	stop_bg "$STRANGLER_PID"
}

# The slow-shadow check (BENCH_SLOW_SHADOW=1): the same strangler in front of
# legacy and the slow newpath, shadow off and shadow 100%; print_table
# compares their client p99.
SLOW_LOAD=${BENCH_SLOW_RATE:+, paced ${BENCH_SLOW_RATE}/s}
SLOW_OFF_NAME="strangler shadow off (${BENCH_SLOW_LATENCY} newpath$SLOW_LOAD)"
SLOW_ON_NAME="strangler shadow 100% (${BENCH_SLOW_LATENCY} newpath$SLOW_LOAD)"

run_strangler_slow_off() {
	SHADOW_MAX_IN_FLIGHT=$BENCH_SLOW_MAX_IN_FLIGHT start_strangler strangler-slow-off "$SLOW_NEWPATH_PORT" 0 0
	bench_target "$SLOW_OFF_NAME" "http://127.0.0.1:$STRANGLER_PORT$BENCH_PATH" "$(slow_wrk_script)"
	record_rss "$SLOW_OFF_NAME" "$STRANGLER_PID"
	stop_bg "$STRANGLER_PID"
}

run_strangler_slow_shadow() {
	SHADOW_MAX_IN_FLIGHT=$BENCH_SLOW_MAX_IN_FLIGHT start_strangler strangler-slow-shadow "$SLOW_NEWPATH_PORT" 0 100
	bench_target "$SLOW_ON_NAME" "http://127.0.0.1:$STRANGLER_PORT$BENCH_PATH" "$(slow_wrk_script)"
	record_rss "$SLOW_ON_NAME" "$STRANGLER_PID"
	record_shadow_metrics "$SLOW_ON_NAME" "$STRANGLER_ADMIN"
	stop_bg "$STRANGLER_PID"
}

# run_soak: BENCH_SOAK_DURATION of wrk (after a BENCH_WARMUP warm-up) on
# strangler with shadow 100% to the slow newpath, after the rounds; sets SOAK_NAME, SOAK_RESULT ("rps p50 p99
# non2xx socket_errors") and SOAK_MEM ("VmRSS_MB VmHWM_MB" right after wrk).
run_soak() {
	local file="$BENCH_TMP/wrk-soak.txt" url
	SOAK_NAME="soak ${BENCH_SOAK_DURATION} of $SLOW_ON_NAME"
	SHADOW_MAX_IN_FLIGHT=$BENCH_SLOW_MAX_IN_FLIGHT start_strangler strangler-soak "$SLOW_NEWPATH_PORT" 0 100
	url="http://127.0.0.1:$STRANGLER_PORT$BENCH_PATH"
	local wrk_args=(-t "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -s "$(slow_wrk_script)")
	log "soak: $SLOW_ON_NAME: warm-up $BENCH_WARMUP"
	wrk "${wrk_args[@]}" -d "$BENCH_WARMUP" "$url" >"$BENCH_TMP/wrk-soak-warmup.txt" 2>&1 ||
		die "soak: wrk warm-up failed: $(cat "$BENCH_TMP/wrk-soak-warmup.txt")"
	log "soak: $SLOW_ON_NAME: wrk --latency -d $BENCH_SOAK_DURATION $url"
	wrk "${wrk_args[@]}" -d "$BENCH_SOAK_DURATION" --latency "$url" >"$file" 2>&1 ||
		die "soak: wrk failed: $(cat "$file")"
	SOAK_MEM=$(proc_mem "$STRANGLER_PID")
	SOAK_RESULT=$(parse_wrk "$file") || die "soak: cannot parse wrk output: $(cat "$file")"
	log "soak: wrk answered: $SOAK_RESULT (req/s p50 p99 non-2xx socket-errors); VmRSS VmHWM MB: $SOAK_MEM"
	ROUND=soak
	record_shadow_metrics "$SOAK_NAME" "$STRANGLER_ADMIN"
	stop_bg "$STRANGLER_PID"
}

# ---------------------------------------------------------------- table

# ratio A B: A/B with two decimals, n/a when B is missing or zero.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

# summarize COLUMN SAMPLES: of field COLUMN (1 = rps, 2 = p50, 3 = p99) of
# the ";"-joined samples, prints "median min max". The median of an even
# count is the mean of the middle two.
summarize() {
	local col=$1 sample
	local -a samples fields
	IFS=';' read -r -a samples <<<"$2"
	for sample in "${samples[@]}"; do
		read -r -a fields <<<"$sample"
		printf '%s\n' "${fields[col - 1]}"
	done | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%s %s %s\n", m, v[1], v[NR]
		}'
}

# rss_note NAME: one line on the row's VmRSS after each run and its peak.
rss_note() {
	awk -v name="$1" -v pairs="${RSS[$1]}" 'BEGIN {
		n = split(pairs, p, ";")
		for (i = 1; i <= n; i++) {
			split(p[i], f, " ")
			rss = rss (i > 1 ? " / " : "") sprintf("%.1f", f[1])
			if (f[2] + 0 > hwm) hwm = f[2] + 0
		}
		printf "%s: VmRSS %s MB after each run (peak VmHWM %.1f MB)\n", name, rss, hwm
	}'
}

# text_width S: the number of characters of S (printf pads by bytes, and
# the runs column holds a multi-byte en dash).
text_width() {
	local LC_ALL=C
	local s=$1
	local cont=${s//[^$'\x80'-$'\xbf']/}
	echo $((${#s} - ${#cont}))
}

# pad WIDTH left|right S: S padded with spaces to WIDTH characters.
pad() {
	local n
	n=$(($1 - $(text_width "$3")))
	((n > 0)) || n=0
	if [[ $2 == left ]]; then
		printf '%s%*s' "$3" "$n" ''
	else
		printf '%*s%s' "$n" '' "$3"
	fi
}

# median_of NAME COLUMN: the median of field COLUMN (1 = rps, 2 = p50,
# 3 = p99) of the row NAME; nothing when the row was not measured.
median_of() {
	local m _
	[[ -v "SAMPLES[$1]" ]] || return 0
	read -r m _ _ <<<"$(summarize "$2" "${SAMPLES[$1]}")"
	echo "$m"
}

# verdict VALUE OP LIMIT: "met" when VALUE OP LIMIT holds (OP is >=, <= or
# <), "MISSED" when not, "n/a" without a VALUE.
verdict() {
	awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
		if (v == "n/a" || v == "") { print "n/a"; exit }
		ok = op == ">=" ? v + 0 >= l + 0 : op == "<=" ? v + 0 <= l + 0 : v + 0 < l + 0
		print ok ? "met" : "MISSED"
	}'
}

# print_targets: below the table, the ratios SPEC.md §13 sets targets for,
# for the rows this run measured.
print_targets() {
	local -a lines=()
	local r p a b
	a="strangler split 10%" b="bare httputil.ReverseProxy"
	if [[ -v "SAMPLES[$a]" && -v "SAMPLES[$b]" ]]; then
		r=$(ratio "$(median_of "$a" 1)" "$(median_of "$b" 1)")
		p=$(ratio "$(median_of "$a" 3)" "$(median_of "$b" 3)")
		lines+=("$a vs $b: req/s ${r}× (target ≥ 1.0×: $(verdict "$r" '>=' 1.0)), p99 ${p}× (target ≤ 1.2×: $(verdict "$p" '<=' 1.2))")
	fi
	a="strangler shadow 100%" b="nginx mirror 100%"
	if [[ -v "SAMPLES[$a]" && -v "SAMPLES[$b]" ]]; then
		r=$(ratio "$(median_of "$a" 1)" "$(median_of "$b" 1)")
		p=$(ratio "$(median_of "$a" 3)" "$(median_of "$b" 3)")
		lines+=("$a vs $b: req/s ${r}× (target ≥ 1.0×: $(verdict "$r" '>=' 1.0)); p99 ${p}× (no target; nginx does no comparison)")
	fi
	a=$SLOW_ON_NAME b=$SLOW_OFF_NAME
	if [[ -v "SAMPLES[$a]" && -v "SAMPLES[$b]" ]]; then
		r=$(ratio "$(median_of "$a" 1)" "$(median_of "$b" 1)")
		p=$(ratio "$(median_of "$a" 3)" "$(median_of "$b" 3)")
		lines+=("$a vs shadow off: client p99 ${p}× (target < 1.10×: $(verdict "$p" '<' 1.10)); req/s ${r}×")
	fi
	if [[ -n ${SOAK_MEM:-} ]]; then
		local rss hwm rps p99 non2xx sockerr
		read -r rss hwm <<<"$SOAK_MEM"
		read -r rps _ p99 non2xx sockerr <<<"$SOAK_RESULT"
		lines+=("$SOAK_NAME: VmRSS $rss MB after it (target < 150 MB: $(verdict "$rss" '<' 150)), peak VmHWM $hwm MB; $(printf '%.0f' "$rps") req/s, p99 $(printf '%.2f' "$p99") ms, $non2xx non-2xx, $sockerr socket errors")
	fi
	((${#lines[@]} > 0)) || return 0
	printf '\nTargets (SPEC.md §13; ratios of the medians above):\n\n'
	printf -- '- %s\n' "${lines[@]}"
}

print_table() {
	local name base_rps='' base_p99='' rps rmin rmax p50 p99 _
	if [[ -v "SAMPLES[bare httputil.ReverseProxy]" ]]; then
		read -r base_rps _ _ <<<"$(summarize 1 "${SAMPLES[bare httputil.ReverseProxy]}")"
		read -r base_p99 _ _ <<<"$(summarize 3 "${SAMPLES[bare httputil.ReverseProxy]}")"
	fi

	local -a cells=("target" "req/s" "runs" "p50 ms" "p99 ms" "req/s vs bare" "p99 vs bare")
	local ncol=${#cells[@]} i w
	local -a widths=()
	for ((i = 0; i < ncol; i++)); do widths[i]=$(text_width "${cells[i]}"); done
	local -a lines=("$(IFS='|'; echo "${cells[*]}")")
	for name in "${ROW_NAMES[@]}"; do
		read -r rps rmin rmax <<<"$(summarize 1 "${SAMPLES[$name]}")"
		read -r p50 _ _ <<<"$(summarize 2 "${SAMPLES[$name]}")"
		read -r p99 _ _ <<<"$(summarize 3 "${SAMPLES[$name]}")"
		cells=("$name" "$(printf '%.0f' "$rps")" "$(printf '%.0f–%.0f' "$rmin" "$rmax")"
			"$(printf '%.2f' "$p50")" "$(printf '%.2f' "$p99")"
			"$(ratio "$rps" "$base_rps")" "$(ratio "$p99" "$base_p99")")
		for ((i = 0; i < ncol; i++)); do
			w=$(text_width "${cells[i]}")
			((w <= widths[i])) || widths[i]=$w
		done
		lines+=("$(IFS='|'; echo "${cells[*]}")")
	done

	local rounds="$BENCH_REPEAT rounds"
	((BENCH_REPEAT > 1)) || rounds="1 round"
	printf '\nnproc=%s  busy before/after=%s/%s  date=%s  %s  wrk -t%s -c%s -d%s --latency (warm-up %s)  %s, medians  GET %s\n\n' \
		"$(nproc)" "$BUSY_BEFORE" "$BUSY_AFTER" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(go env GOVERSION)" \
		"$BENCH_THREADS" "$BENCH_CONNECTIONS" "$BENCH_DURATION" "$BENCH_WARMUP" "$rounds" "$BENCH_PATH"
	local n=0 line sep
	for line in "${lines[@]}"; do
		IFS='|' read -r -a cells <<<"$line"
		printf '|'
		for ((i = 0; i < ncol; i++)); do
			if ((i == 0)); then
				printf ' %s |' "$(pad "${widths[i]}" left "${cells[i]}")"
			else
				printf ' %s |' "$(pad "${widths[i]}" right "${cells[i]}")"
			fi
		done
		printf '\n'
		if ((n == 0)); then
			printf '|'
			for ((i = 0; i < ncol; i++)); do
				sep=$(printf '%*s' "${widths[i]}" '' | tr ' ' -)
				if ((i == 0)); then printf ' %s |' "$sep"; else printf ' %s:|' "$sep"; fi
			done
			printf '\n'
		fi
		n=$((n + 1))
	done
	print_targets
	for name in "${ROW_NAMES[@]}"; do
		[[ ! -v "RSS[$name]" ]] || NOTES+=("$(rss_note "$name")")
	done
	for name in "${SHADOW_ROWS[@]}"; do
		NOTES+=("$(shadow_note "$name")")
	done
	if ((${#NOTES[@]} > 0)); then
		printf '\n'
		printf -- '- %s\n' "${NOTES[@]}"
	fi
}

# ---------------------------------------------------------------- main

# cpu_busy: the percentage of all cores' time spent busy during one second,
# from /proc/stat. Before the bench starts anything (and after it stopped
# every row), that is someone else's load on the cores the rows share.
cpu_busy() {
	local a b
	a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	sleep 1
	b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		busy = y[1] - x[1]; idle = y[2] - x[2]
		printf "%.0f%%\n", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0
	}'
}

# warn_busy PERCENT WHEN: a warning on stderr when PERCENT is above 10%.
warn_busy() {
	((${1%\%} <= 10)) ||
		log "warning: the CPU was $1 busy $2 the bench, with none of its processes running: the numbers will be noisy"
}

main() {
	local key
	case $BENCH_SLOW_SHADOW in
	1)
		for key in $SLOW_TARGETS; do
			[[ " $BENCH_TARGETS " == *" $key "* ]] || BENCH_TARGETS+=" $key"
		done
		;;
	'' | 0) ;;
	*) die "BENCH_SLOW_SHADOW=$BENCH_SLOW_SHADOW: want 1, 0 or empty" ;;
	esac
	for key in $BENCH_TARGETS; do
		[[ " $ALL_TARGETS $SLOW_TARGETS " == *" $key "* ]] ||
			die "unknown target $key in BENCH_TARGETS; known: $ALL_TARGETS $SLOW_TARGETS"
	done
	[[ $BENCH_REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT=$BENCH_REPEAT: want a positive integer"
	[[ -z $BENCH_SLOW_RATE || $BENCH_SLOW_RATE =~ ^[1-9][0-9]*$ ]] ||
		die "BENCH_SLOW_RATE=$BENCH_SLOW_RATE: want a positive integer (requests a second) or nothing"
	ensure_tools
	ensure_binaries
	BUSY_BEFORE=$(cpu_busy)
	warn_busy "$BUSY_BEFORE" before

	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	BENCH_TMP=$(mktemp -d /tmp/strangler-bench.XXXXXX)
	# nginx workers run as nobody and must reach their temp paths in here.
	chmod 755 "$BENCH_TMP"

	log "building bench/bareproxy"
	go build -o "$BENCH_TMP/bareproxy" ./bench/bareproxy || die "go build ./bench/bareproxy failed"
	write_wrk_script
	start_upstreams

	# Interleaved rounds: every row once per round, so that the drift of a
	# noisy machine falls on every row alike instead of on whichever row
	# happened to run during a slow minute.
	for ((ROUND = 1; ROUND <= BENCH_REPEAT; ROUND++)); do
		log "round $ROUND/$BENCH_REPEAT"
		for key in $BENCH_TARGETS; do
			"run_${key//-/_}"
		done
	done
	[[ $BENCH_SLOW_SHADOW != 1 ]] || run_soak
	# Every proxy is stopped; the backends are idle.
	BUSY_AFTER=$(cpu_busy)
	warn_busy "$BUSY_AFTER" after
	print_table
}

main "$@"
