#!/usr/bin/env bash
# Prints the goodput table of docs/server-models.md: for Tier0 and Tier1 of
# both tier tables, each server model and each assumption (unknown, learn,
# the matching model), the share of the RPM limit an RPM-bound job gets, the
# share of the TPM limit a TPM-bound job gets, and the 429s of both.
#   goodput_table.sh path/to/tollgate-sim
set -eu
sim=$1
rpm_job=(--agents 30 --requests 4 --latency 1000 --tpd 100000000)
tpm_job=(--agents 20 --requests 5 --prompt 200000 --output 200-1000 --max-tokens 1000 --latency 1000 --tpd 100000000)
tpm_job1=(--agents 40 --requests 10 --prompt 100000 --output 200-1000 --max-tokens 1000 --latency 1000)
rpm_job1=(--agents 100 --requests 20 --latency 1000)
cell() {  # args...: prints "RPM% TPM% 429s" for one assumption
  local a b r1 r2
  a=$("$sim" --quiet "$@" "${rj[@]}" || true)
  b=$("$sim" --quiet "$@" "${tj[@]}" || true)
  r1=$(sed -n 's/^paced goodput: [0-9.]* requests\/min accepted (\([0-9]*\) % of the limit).*/\1/p' <<<"$a")
  r2=$(sed -n 's/^paced goodput: .*, [0-9]* tokens\/min accepted (\([0-9]*\) % of the limit), in the.*/\1/p' <<<"$b")
  local n1 n2
  n1=$(sed -n 's/^| 429s | \([0-9]*\) |.*/\1/p' <<<"$a")
  n2=$(sed -n 's/^| 429s | \([0-9]*\) |.*/\1/p' <<<"$b")
  printf '%s %% / %s %% / %s' "$r1" "$r2" "$((n1 + n2))"
}
echo "| table | tier | server | unknown | learn | matching model |"
echo "|---|---|---|---|---|---|"
for table in 2026-05 2026-09; do
  for tier in 0 1; do
    if [ "$tier" = 0 ]; then rj=("${rpm_job[@]}"); tj=("${tpm_job[@]}"); else rj=("${rpm_job1[@]}"); tj=("${tpm_job1[@]}"); fi
    for server in fixed log counter bucket gcra; do
      u=$(cell --table "$table" --tier "$tier" --server "$server" --assume unknown)
      l=$(cell --table "$table" --tier "$tier" --server "$server" --assume learn)
      m=$(cell --table "$table" --tier "$tier" --server "$server" --assume "$server")
      echo "| $table | $tier | $server | $u | $l | $m |"
    done
  done
done
