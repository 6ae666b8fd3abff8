#!/usr/bin/env bash
# End-to-end: a real nginx on 127.0.0.1 enforcing a request rate (limit_req,
# a leaky bucket) and a concurrency limit (limit_conn), answering 429 with
# Kimi-style bodies that differ for the two and a Retry-After; behind it an
# upstream on another loopback port that answers after about 0.25 s. The
# libcurl client runs unpaced (expects 429s, each named by the classifier),
# paced by tollgate (expects zero 429s) and overdriven (expects 429s, pauses,
# and no request lost); then as four worker processes paced by one shared
# account (expects zero 429s) and by one account each at the full limits
# (expects 429s, each named, none lost); then as four worker processes paced
# through one account in Redis (a redis-server of its own on 127.0.0.1, a
# free port, stopped through its pid; expects zero 429s, none lost), per
# request and in chunked mode (slices of the bucket's time). Runs in
# real time; asserts counts, never durations. Without redis-server
# (TOLLGATE_REDIS_SERVER, else PATH) or a client built with hiredis, the
# Redis run is skipped, and with CI=true the test fails.
# Usage: nginx.sh CLIENT WORKDIR
set -euo pipefail
client=$1 work=$2
rate=10 conc=4 n=40
rm -rf "$work"
mkdir -p "$work/logs"

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
# Below Linux's ephemeral range (32768 and up), where the Redis tests' servers take the
# ports the kernel hands out while this test may run beside them.
front=$(free_port $((20000 + $$ % 12000)))
back=$(free_port $((front + 1)))

pad=$(head -c 2000 /dev/zero | tr '\0' '.')
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  limit_req_zone \$binary_remote_addr zone=rpm:1m rate=${rate}r/s;
  limit_conn_zone \$binary_remote_addr zone=conc:1m;
  server {
    listen 127.0.0.1:$front;
    location = /v1/chat/completions {
      limit_req zone=rpm nodelay;
      limit_req_status 429;
      limit_conn conc $conc;
      limit_conn_status 430;
      error_page 429 = @rpm;
      error_page 430 = @conc;
      proxy_pass http://127.0.0.1:$back;
    }
    location @rpm {
      add_header Retry-After 1 always;
      default_type application/json;
      return 429 '{"error":{"message":"request reached organization max RPM: $rate, please try again after 1 seconds","type":"rate_limit_reached_error"}}';
    }
    location @conc {
      add_header Retry-After 1 always;
      default_type application/json;
      return 429 '{"error":{"message":"request reached max organization concurrency: $conc, please try again after 1 seconds","type":"rate_limit_reached_error"}}';
    }
  }
  server {
    listen 127.0.0.1:$back;
    location / {
      limit_rate 8000;
      default_type application/json;
      return 200 '{"id":"chatcmpl-1","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15},"pad":"$pad"}';
    }
  }
}
CONF

redis_pid=
stop() {
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if [ -n "$redis_pid" ]; then kill -9 "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
}
trap stop EXIT
trap 'exit 143' TERM INT HUP
nginx -p "$work" -e "$work/logs/error.log" -c "$work/nginx.conf"
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$front") 2>/dev/null && break; sleep 0.1; done

url="http://127.0.0.1:$front/v1/chat/completions"
# The spacing margin covers the jitter between an admission and nginx's reading
# of its clock (its event loop caches the time): tens of milliseconds on a
# loaded 2-core host. (The overdriven run keeps the default: it believes in
# twice the rate, and a margin that large would space it back to the real one.)
margin_ms=50
run() {
  sleep 1.2  # let nginx's leaky bucket drain between runs
  timeout 90 "$client" --url "$url" --requests "$2" --rate "$rate" --concurrency "$conc" --mode "$1" "${@:3}"
}
field() { sed -n "s/.*[ (]$1 \([0-9]*\).*/\1/p" <<<"$2"; }

unpaced=$(run unpaced "$n"); echo "$unpaced"
paced=$(run paced "$n" --margin-ms "$margin_ms"); echo "$paced"
n_over=16  # every 429 pauses the account about a second: keep this run short
over=$(run overdrive "$n_over"); echo "$over"
shared=$(run paced "$n" --margin-ms "$margin_ms" --processes 4 --account shared); echo "$shared"
each=$(run paced "$n" --margin-ms "$margin_ms" --processes 4 --account each); echo "$each"

fail=0
check() { if ! eval "$1"; then echo "FAILED: $2"; fail=1; fi; }
# Four workers through one account in Redis: a server of this test's own.
redis_bin=${TOLLGATE_REDIS_SERVER:-$(command -v redis-server || true)}
redis_note=
in_redis=
in_chunks=
if [ -z "$redis_bin" ] || [ ! -x "$redis_bin" ]; then
  redis_note="redis-server not found"
else
  rport=$(free_port $((back + 1)))
  "$redis_bin" --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning \
    >"$work/logs/redis.log" 2>&1 &
  redis_pid=$!
  up=
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null; then up=1; break; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    redis_note="redis-server did not start on 127.0.0.1:$rport"
  else
    set +e
    in_redis=$(run paced "$n" --margin-ms "$margin_ms" --processes 4 --account redis --redis "127.0.0.1:$rport")
    rc=$?
    set -e
    if [ $rc -ne 77 ]; then echo "$in_redis"; fi
    if [ $rc -eq 77 ]; then
      redis_note="the client is built without hiredis"
      in_redis=
    elif [ $rc -ne 0 ]; then
      echo "FAILED: the Redis run exited $rc"
      fail=1
      in_redis=
    else
      # Chunked: each worker leases slices of the bucket's time (half a
      # second's requests each) and spaces its own requests in them.
      set +e
      in_chunks=$(run paced "$n" --margin-ms "$margin_ms" --processes 4 --account redis --redis "127.0.0.1:$rport" \
        --chunk-parts 2)
      rc=$?
      set -e
      echo "$in_chunks"
      if [ $rc -ne 0 ]; then
        echo "FAILED: the chunked Redis run exited $rc"
        fail=1
        in_chunks=
      fi
    fi
  fi
  kill -9 "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=
fi
if [ -n "$redis_note" ]; then
  if [ "${CI:-}" = true ]; then echo "FAILED: $redis_note and CI=true: the Redis run cannot be skipped"; fail=1
  else echo "skipped the Redis run: $redis_note"; fi
fi
u429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$unpaced")
urpm=$(field rpm "$unpaced"); uconc=$(field concurrency "$unpaced"); uother=$(field other "$unpaced")
check '[ "$u429" -gt 0 ]' "the unpaced client got no 429"
check '[ "$uother" -eq 0 ] && [ $((urpm + uconc)) -eq "$u429" ]' "the classifier did not name every 429 as RPM or concurrency"
p429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$paced")
check '[ "$p429" -eq 0 ]' "the paced client got 429s"
check '[ "$(field ok "$paced")" -eq "$n" ] && [ "$(field lost "$paced")" -eq 0 ]' "the paced client did not complete every request"
o429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$over")
check '[ "$o429" -gt 0 ]' "the overdriven client never met a 429"
check '[ "$(field ok "$over")" -eq "$n_over" ] && [ "$(field lost "$over")" -eq 0 ]' "the overdriven client lost requests"
s429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$shared")
check '[ "$s429" -eq 0 ]' "four processes on one shared account got 429s"
check '[ "$(field ok "$shared")" -eq "$n" ] && [ "$(field lost "$shared")" -eq 0 ]' "the shared account's processes did not complete every request"
e429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$each")
check '[ "$e429" -gt 0 ]' "four processes with one account each at the full limits got no 429"
check '[ "$(field other "$each")" -eq 0 ] && [ $(( $(field rpm "$each") + $(field concurrency "$each") )) -eq "$e429" ]' "the classifier did not name every 429 of the four accounts"
check '[ "$(field ok "$each")" -eq "$n" ] && [ "$(field lost "$each")" -eq 0 ]' "the four accounts lost requests"
redis_summary=", Redis run skipped"
if [ -n "$in_redis" ]; then
  r429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$in_redis")
  check '[ "$r429" -eq 0 ]' "four processes on one account in Redis got 429s"
  check '[ "$(field ok "$in_redis")" -eq "$n" ] && [ "$(field lost "$in_redis")" -eq 0 ]' "the Redis account's processes did not complete every request"
  redis_summary=", one account in Redis 0 x 429"
  if [ -n "$in_chunks" ]; then
    c429=$(sed -n 's/.*429 \([0-9]*\).*/\1/p' <<<"$in_chunks")
    check '[ "$c429" -eq 0 ]' "four processes on one chunked account in Redis got 429s"
    check '[ "$(field ok "$in_chunks")" -eq "$n" ] && [ "$(field lost "$in_chunks")" -eq 0 ]' "the chunked Redis account's processes did not complete every request"
    redis_summary="$redis_summary, in slices 0 x 429"
  else
    check 'false' "the chunked Redis run gave no result"
  fi
fi
[ $fail -eq 0 ] && echo "e2e: unpaced $u429 x 429 (rpm $urpm, concurrency $uconc); paced 0 x 429; overdriven $o429 x 429, none lost; 4 processes: shared account 0 x 429, one account each $e429 x 429$redis_summary"
exit $fail
