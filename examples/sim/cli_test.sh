#!/usr/bin/env bash
# Runs tollgate-sim once and checks how it ends:
#   cli_test.sh EXE STATUS REGEX [ARG...]
# STATUS is the exit status expected; REGEX (extended) must match its output
# (stdout and stderr together). A status of 2 must come with exactly one line
# on stderr. The argument @empty@ stands for an empty argument.
set -u
exe=$1 want=$2 regex=$3
shift 3
args=()
for a in "$@"; do
  if [ "$a" = "@empty@" ]; then args+=(""); else args+=("$a"); fi
done
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
"$exe" --quiet "${args[@]}" >"$out" 2>"$err"
got=$?
cat "$out" "$err"
if [ "$got" -ne "$want" ]; then
  echo "cli_test: exit status $got, expected $want" >&2
  exit 1
fi
if ! cat "$out" "$err" | grep -Eq -- "$regex"; then
  echo "cli_test: output does not match: $regex" >&2
  exit 1
fi
if [ "$want" -eq 2 ] && [ "$(wc -l <"$err")" -ne 1 ]; then
  echo "cli_test: expected one line on stderr, got $(wc -l <"$err")" >&2
  exit 1
fi
exit 0
