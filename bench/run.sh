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

# Rows, in table order. The names are the keys of the run_<key> functions.
ALL_TARGETS="direct bare nginx-split strangler-split"
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

# bench_target NAME URL: checks URL answers 2xx, warms it up, measures it with
# wrk and records this round's sample of the row NAME.
bench_target() {
	local name=$1 url=$2 code out slug
	code=$(http_status "$url" -H "X-User-Id: 1")
	[[ $code == 2* ]] || die "$name: GET $url answered $code, want 2xx (is BENCH_PATH=$BENCH_PATH a seeded order?)"

	slug=${name//[^A-Za-z0-9]/_}-r$ROUND
	local wrk_args=(-t "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -s "$BENCH_TMP/users.lua")
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
	read -r -a ports <<<"$(free_ports 4)"
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

	wait_ready "legacy upstream" "$LEGACY_PID" "$BENCH_TMP/legacy.log" "http://127.0.0.1:$LEGACY_PORT$BENCH_PATH" any
	wait_ready "newpath stand-in" "$NEWPATH_PID" "$BENCH_TMP/newpath.log" "http://127.0.0.1:$NEWPATH_PORT$BENCH_PATH" any
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

# write_nginx_conf FILE PORT: nginx splitting 10% of users to the newpath by
# X-User-Id, the closest nginx gets to strangler's sticky split.
write_nginx_conf() {
	local file=$1 port=$2 dir
	dir=$(dirname "$file")
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

    split_clients "\${http_x_user_id}" \$bench_backend {
        10%     newpath;
        *       legacy;
    }

    server {
        listen 127.0.0.1:$port;

        location / {
            proxy_pass http://\$bench_backend;
            # HTTP/1.1 with an empty Connection header keeps upstream
            # connections alive, as strangler's transport does.
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
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

run_nginx_split() {
	local port dir="$BENCH_TMP/nginx-split" pid
	mkdir -p "$dir"
	port=$(free_ports 1)
	write_nginx_conf "$dir/nginx.conf" "$port"
	start_nginx "$dir/nginx.conf"
	pid=$STARTED_PID
	wait_ready "nginx" "$pid" "$dir/error.log" "http://127.0.0.1:$port$BENCH_PATH" any
	bench_target "nginx split_clients 10%" "http://127.0.0.1:$port$BENCH_PATH"
	stop_bg "$pid"
}

# write_strangler_conf FILE PORT ADMIN_PORT
write_strangler_conf() {
	cat >"$1" <<EOF
listen: "127.0.0.1:$2"
admin: { listen: "127.0.0.1:$3" }
upstreams:
  legacy:  { url: "http://127.0.0.1:$LEGACY_PORT" }
  newpath: { url: "http://127.0.0.1:$NEWPATH_PORT" }
sticky: { key: "header:X-User-Id", salt: "bench" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 10
EOF
}

# record_rss NAME PID: records VmRSS and VmHWM of PID (in MB) after this
# round's run of the row NAME; print_table sums them up under the table.
record_rss() {
	local name=$1 pair
	pair=$(awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 }
		END { printf "%.1f %.1f", rss / 1024, hwm / 1024 }' "/proc/$2/status")
	RSS[$name]+="${RSS[$name]:+;}$pair"
}

run_strangler_split() {
	local port admin pid
	read -r port admin <<<"$(free_ports 2)"
	write_strangler_conf "$BENCH_TMP/strangler.yaml" "$port" "$admin"
	# The JSON access log goes to stderr and stays on: it is part of the cost.
	start_bg "strangler" "$BENCH_TMP/strangler.log" \
		"$STRANGLER_BIN" serve --config "$BENCH_TMP/strangler.yaml"
	pid=$STARTED_PID
	wait_ready "strangler" "$pid" "$BENCH_TMP/strangler.log" "http://127.0.0.1:$admin/healthz" 200
	bench_target "strangler split 10%" "http://127.0.0.1:$port$BENCH_PATH"
	record_rss "strangler split 10%" "$pid"
	stop_bg "$pid"
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
	printf '\nnproc=%s  date=%s  %s  wrk -t%s -c%s -d%s --latency (warm-up %s)  %s, medians  GET %s\n\n' \
		"$(nproc)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(go env GOVERSION)" \
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
	for name in "${ROW_NAMES[@]}"; do
		[[ ! -v "RSS[$name]" ]] || NOTES+=("$(rss_note "$name")")
	done
	if ((${#NOTES[@]} > 0)); then
		printf '\n'
		printf -- '- %s\n' "${NOTES[@]}"
	fi
}

# ---------------------------------------------------------------- main

main() {
	local key
	for key in $BENCH_TARGETS; do
		[[ " $ALL_TARGETS " == *" $key "* ]] || die "unknown target $key in BENCH_TARGETS; known: $ALL_TARGETS"
	done
	[[ $BENCH_REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT=$BENCH_REPEAT: want a positive integer"
	ensure_tools
	ensure_binaries

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
	print_table
}

main "$@"
