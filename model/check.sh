#!/usr/bin/env bash
# Model-check the dotlock protocol (model/lock.pml) and the helper session
# (model/session.pml) with spin.
#
#   bash model/check.sh            every run of the table below (CI)
#   bash model/check.sh NAME...    only those runs
#   bash model/check.sh --deep     also the two-fault safety runs (slow)
#   bash model/check.sh --list     the runs, without running them
#
# First it checks that every code reference of the model (`@ FILE:A-B`)
# still points at the code it quotes. Then, for each run, it generates
# the verifier (spin -a), compiles it (gcc), runs it under `timeout`, and
# prints states stored, depth, memory and time. It fails when a run of
# the real model finds an error or does not finish its search, and when a
# mutant, a regression or a known limit is NOT found (the checker must be
# seen to bite). Counterexamples are kept under $MODEL_OUT (default a
# temporary directory) with the command that replays them.
#
# Environment: MODEL_JOBS (parallel runs, default 2), MODEL_TIMEOUT
# (seconds per run, default 600), MODEL_MEMLIM (MB per run, default 3000),
# MODEL_OUT (where runs are kept).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
src="$root/lockfile/src"

jobs=${MODEL_JOBS:-2}
limit=${MODEL_TIMEOUT:-600}
memlim=${MODEL_MEMLIM:-3000}

for tool in spin gcc timeout; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${SPOOLLOCK_REQUIRE_SPIN:-0}" = 1 ]; then
      echo "model/check.sh: $tool is missing" >&2
      exit 1
    fi
    echo "model/check.sh: $tool not installed: model check skipped (Debian: apt-get install spin gcc)"
    exit 0
  fi
done

# name | kind | expect | flags | what
#   flags:  spin's -D flags; a word ending in .pml names the model (default
#           lock.pml)
#   kind:   safety (assertions, invalid end states), deep (the same with
#           hash compaction, which may miss a state with the probability
#           pan reports), or progress (LTL, weak fairness)
#   expect: holds (no error, complete search) or found (a counterexample)
runs=$(cat <<'EOF'
safety-local    |safety  |holds|              |library (CheckThenUnlink), local fs: mutual exclusion, held lock in place, no wait on own lock, no deadlock; <=1 fault: kill, stale by age
safety-local-mva|safety  |holds|-DMOVE_ASIDE  |helper (MoveAside), local fs: the same; <=1 fault: kill, stop past the stale age, stale by age
safety-nfs      |safety  |holds|-DNFS         |library, NFS: the same with lookup caches and lost replies
safety-nfs-mva  |safety  |holds|-DNFS -DMOVE_ASIDE|helper, NFS: the same
progress-local  |progress|holds|-DLIVENESS    |library, local fs: the lock is taken again and again (weak fairness; <=1 kill)
progress-nfs    |progress|holds|-DLIVENESS -DNFS|library, NFS: the same
progress-local-mva|progress|holds|-DLIVENESS -DMOVE_ASIDE|helper, local fs: the same
progress-nfs-mva|progress|holds|-DLIVENESS -DNFS -DMOVE_ASIDE|helper, NFS: the same
mutant-a        |safety  |found|-DNFS -DMUT_TRUST_LINK|mutant (a): link's reported result trusted
mutant-b        |safety  |found|-DMOVE_ASIDE -DMUT_RELEASE_NOCHECK|mutant (b): release without the identity check
mutant-c        |safety  |found|-DMUT_BREAK_NOCHECK|mutant (c): break without re-check or comparison
mutant-d        |safety  |found|-DMUT_NO_PUTBACK|mutant (d): put_back removed
bug-own-wait    |safety  |found|-DBUG_OWN_WAIT|found by the model: acquire without its own-file check waits on its own file
limit-ctu       |safety  |found|-DSTOPS       |known limit: CheckThenUnlink's window (the releaser was stopped past the stale age)
limit-window    |safety  |found|-DMOVE_ASIDE -DOPEN_WINDOW|known limit: the residual window of a move aside by mistake
safety-nfs-lying|safety  |holds|-DNFS -DLYING_SERVER|library, NFS, a server that may report a link it did not make: the same
safety-nfs-mva-lying|safety|holds|-DNFS -DMOVE_ASIDE -DLYING_SERVER|helper, NFS, the same lying server, with stops
bug-lying       |safety  |found|-DNFS -DSTOPS -DLYING_SERVER -DCACHED_IDENTITY|found by the model: an identity check the lookup cache answers takes a link a server reported but never made
sanity-progress |progress|found|-DLIVENESS -DNO_AGING|the progress check bites: a lock nobody keeps fresh never goes stale
bug-shared-aside|safety  |found|-DMOVE_ASIDE -DSHARED_ASIDE|found by the model: sessions sharing one aside name remove a third process's lock (the helper now keeps one per session)
session         |safety  |holds|session.pml   |helper session: a session lock only while its session runs, an intent before every change, released and ended at EOF/Bye/bad frame, no hang, refreshed; kill, audit failures
mutant-s1       |safety  |found|session.pml -DMUT_RELEASE_FIRST|mutant (s1): the session's end releases before its intent
mutant-s2       |safety  |found|session.pml -DMUT_NO_RELEASE_AT_EOF|mutant (s2): end of file leaves the session lock
mutant-s3       |safety  |found|session.pml -DMUT_WAIT_IGNORES_EOF|mutant (s3): a wait for a busy lock ignores the client's end of file
mutant-s4       |safety  |found|session.pml -DMUT_NO_REFRESH|mutant (s4): the refresh is never made (neither when due nor at the poll's timeout)
session-busy-client|safety|holds|session.pml -DTRICKLE|helper session, a client never quiet for a whole refresh period (half-frame bytes, Check without bound): the lock is still refreshed
bug-busy-client |safety  |found|session.pml -DTRICKLE -DOLD_REFRESH|found by the model: with the refresh only on a poll's timeout, a client never quiet for a whole period starved it and the held lock went stale
EOF
)
deep_runs=$(cat <<'EOF'
deep-local      |deep    |holds|-DMAXFAULTS=2 |library, local fs, <=2 faults
deep-local-mva  |deep    |holds|-DMOVE_ASIDE -DMAXFAULTS=2|helper, local fs, <=2 faults
deep-nfs        |deep    |holds|-DNFS -DMAXFAULTS=2|library, NFS, <=2 faults
deep-nfs-mva    |deep    |holds|-DNFS -DMOVE_ASIDE -DMAXFAULTS=2|helper, NFS, <=2 faults
EOF
)

deep=0
list=0
only=()
for arg in "$@"; do
  case "$arg" in
    --deep) deep=1 ;;
    --list) list=1 ;;
    -*) echo "model/check.sh: unknown option $arg" >&2; exit 2 ;;
    *) only+=("$arg") ;;
  esac
done
if [ "$deep" = 1 ]; then
  runs="$runs"$'\n'"$deep_runs"
fi
if [ "${#only[@]}" -gt 0 ]; then
  all="$runs"$'\n'"$deep_runs"
  runs=""
  for name in "${only[@]}"; do
    line=$(printf '%s\n' "$all" | awk -F'|' -v n="$name" '{ k = $1; gsub(/ /, "", k) } k == n')
    [ -n "$line" ] || { echo "model/check.sh: no run named $name" >&2; exit 2; }
    runs="$runs${runs:+$'\n'}$line"
  done
fi
if [ "$list" = 1 ]; then
  printf '%s\n' "$runs" | awk -F'|' '{ printf "%-16s %-8s %-6s %s\n", $1, $2, $3, $5 }'
  exit 0
fi

# ---- the model's references to the code ----------------------------------
# `@ [COMMIT:]FILE:FIRST[-LAST] FUNCTION "TEXT"`: TEXT must occur within
# those lines of FILE (as of COMMIT, if given). FILE is a path from the
# repository's root when it has a `/` (helper/src/session.rs), otherwise a
# file of lockfile/src/.
bad=0
checked=0
models=()
for m in "$here"/*.pml; do
  models+=("$(basename "$m")")
  while IFS= read -r ref; do
    re='^@ (([0-9a-f]{7,40}):)?([A-Za-z0-9_./-]*[a-z_]+\.rs):([0-9]+)(-([0-9]+))? ([^ ]+) "(.*)"$'
    if [[ ! "$ref" =~ $re ]]; then
      echo "model/check.sh: malformed reference in $(basename "$m"): $ref" >&2
      bad=1
      continue
    fi
    commit=${BASH_REMATCH[2]} file=${BASH_REMATCH[3]} first=${BASH_REMATCH[4]}
    last=${BASH_REMATCH[6]:-${BASH_REMATCH[4]}} text=${BASH_REMATCH[8]}
    case "$file" in
      */*) path=$file ;;
      *) path=lockfile/src/$file ;;
    esac
    if [ -n "$commit" ]; then
      if ! content=$(git -C "$root" show "$commit:$path" 2>/dev/null); then
        echo "model/check.sh: note: $commit not in this clone, reference not checked: $ref"
        continue
      fi
    elif [ -f "$root/$path" ]; then
      content=$(cat "$root/$path")
    else
      echo "model/check.sh: reference to a missing file (moved? update $(basename "$m") and README.md): $ref" >&2
      bad=1
      continue
    fi
    if ! printf '%s\n' "$content" | sed -n "${first},${last}p" | grep -qF -- "$text"; then
      echo "model/check.sh: stale reference (the code moved or changed; update $(basename "$m") and README.md): $ref" >&2
      bad=1
    fi
    checked=$((checked + 1))
  done < <(grep -oE '@ ([0-9a-f]{7,40}:)?[A-Za-z0-9_./-]*[a-z_]+\.rs:[0-9]+(-[0-9]+)? [^ ]+ "[^"]*"' "$m")
done
if [ "$bad" != 0 ]; then
  exit 1
fi
echo "model/check.sh: $checked code references of ${models[*]} are current"

# ---- the runs -------------------------------------------------------------
out=${MODEL_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/spoollock-model.XXXXXX")}
mkdir -p "$out"

# The model a row names (a word of its flags ending in .pml), and its
# spin flags (the other words).
row_model() {
  local w model=lock.pml
  for w in $1; do
    case "$w" in *.pml) model=$w ;; esac
  done
  echo "$model"
}
row_flags() {
  local w out=()
  for w in $1; do
    case "$w" in *.pml) ;; *) out+=("$w") ;; esac
  done
  echo "${out[*]}"
}

run_one() {
  local name=$1 kind=$2 model flags
  model=$(row_model "$3")
  flags=$(row_flags "$3")
  local dir="$out/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$here/$model" "$dir/$model"
  (
    cd "$dir"
    # shellcheck disable=SC2086
    if ! spin -a $flags "$model" >spin.log 2>&1; then
      echo "spin -a failed" >result
      exit 0
    fi
    local cflags runflags
    if [ "$kind" = safety ]; then
      # Safety: assertions and invalid end states, no claim; exhaustive,
      # with partial-order reduction and state compression.
      cflags="-DSAFETY -DNOCLAIM -DCOLLAPSE"
      runflags="-m2000000"
    elif [ "$kind" = deep ]; then
      # Too many states to store whole: hash compaction.
      cflags="-DSAFETY -DNOCLAIM -DHC4"
      runflags="-m2000000 -w28"
    else
      # Progress: the LTL claim, acceptance cycles, weak fairness.
      cflags="-DNFAIR=3 -DCOLLAPSE"
      runflags="-a -f -N progress -m2000000"
    fi
    # shellcheck disable=SC2086
    if ! gcc -O2 $cflags -DMEMLIM="$memlim" -o pan pan.c >gcc.log 2>&1; then
      echo "gcc failed" >result
      exit 0
    fi
    local start end rc=0
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout "$limit" ./pan $runflags >pan.out 2>&1 || rc=$?
    end=$(date +%s.%N)
    echo "$rc" >rc
    echo "$start $end" | awk '{ printf "%.1f\n", $2 - $1 }' >wall
    echo "spin -t -p -g $flags $model   # in $dir" >replay
    echo done >result
  )
}

names=()
while IFS='|' read -r name kind expect flags what; do
  name=${name// /} kind=${kind// /} expect=${expect// /}
  names+=("$name")
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_one "$name" "$kind" "$flags" &
done <<<"$runs"
wait

status=0
printf '\n%-18s %-8s %-6s %-9s %12s %9s %10s %8s  %s\n' \
  run kind expect result states depth "memory MB" "time s" what
while IFS='|' read -r name kind expect flags what; do
  name=${name// /} kind=${kind// /} expect=${expect// /}
  dir="$out/$name"
  result=$(cat "$dir/result" 2>/dev/null || echo "no result")
  if [ "$result" != done ]; then
    printf '%-18s %-8s %-6s %-9s  %s\n' "$name" "$kind" "$expect" ERROR "$result (see $dir)"
    status=1
    continue
  fi
  rc=$(cat "$dir/rc")
  p="$dir/pan.out"
  errors=$(grep -oE 'errors: [0-9]+' "$p" | awk '{ print $2 }' | tail -1)
  states=$(grep -E 'states, stored' "$p" | awk '{ print $1 }' | tail -1)
  depth=$(grep -oE 'depth reached [0-9]+' "$p" | awk '{ print $3 }' | tail -1)
  mem=$(grep -E 'total actual memory usage' "$p" | awk '{ print $1 }' | tail -1)
  secs=$(grep -oE 'elapsed time [0-9.e+]+' "$p" | awk '{ print $3 }' | tail -1)
  incomplete=0
  if [ "$rc" = 124 ] || [ -z "$errors" ] ||
     grep -qE 'Search not completed|max search depth too small|out of memory|memory limit' "$p"; then
    incomplete=1
  fi
  if [ "$expect" = holds ]; then
    if [ "$rc" = 124 ]; then
      verdict="TIMEOUT"; status=1
    elif [ "${errors:-1}" != 0 ]; then
      verdict="ERROR"; status=1
    elif [ "$incomplete" = 1 ]; then
      verdict="PARTIAL"; status=1
    else
      verdict="holds"
    fi
  else
    if [ -n "$errors" ] && [ "$errors" != 0 ]; then
      verdict="found"
    else
      verdict="MISSED"; status=1
    fi
  fi
  printf '%-18s %-8s %-6s %-9s %12s %9s %10s %8s  %s\n' \
    "$name" "$kind" "$expect" "$verdict" "${states:--}" "${depth:--}" "${mem:--}" \
    "${secs:-$(cat "$dir/wall")}" "$what"
  if [ "$verdict" = found ] || [ "$verdict" = ERROR ]; then
    why=$(grep -E '^pan:1: |acceptance cycle|invalid end state' "$p" | head -1 | cut -c1-150)
    printf '%-18s   %s\n' "" "${why:-counterexample}; replay: $(cat "$dir/replay")"
  elif [ "$verdict" != holds ]; then
    printf '%-18s   %s\n' "" "see $p"
  fi
done <<<"$runs"

# What a replay needs stays (the model, its trail, pan's report); the
# generated verifier goes.
for dir in "$out"/*/; do
  rm -f "$dir"pan "$dir"pan.[bchmpt] "$dir"_spin_nvr.tmp
done

if [ "$status" != 0 ]; then
  echo "model/check.sh: FAILED (runs kept in $out)" >&2
else
  echo "model/check.sh: every run as expected (runs kept in $out)"
fi
exit "$status"
