#!/usr/bin/env bash
# The migration benchmark (see BENCHMARKS.md): starts a private Dovecot, seeds
# 10,000 messages (the shared seeder's mix, ~117 MB) and measures a raw
# pipelined baseline and `popferry sync` on loopback and through a 40 ms RTT
# proxy, a Gmail-shaped target (no LITERAL+, 4 sessions) and a POP3 source
# without PIPELINING, then one 200 MiB message alone; prints a Markdown table.
#
#   scripts/bench.sh                       # everything (~5 min on 2 cores)
#   BENCH_N=2000 BENCH_SKIP=big scripts/bench.sh
#
# Knobs: BENCH_N, BENCH_LATENCY_N, BENCH_DELAY_MS, BENCH_BIG_MB, BENCH_WINDOW,
# BENCH_SEEDER, BENCH_GMAIL_N, BENCH_SESSIONS, BENCH_SKIP
# (loopback,latency,gmail,nopipe,big,history). Needs dovecot-core
# dovecot-imapd dovecot-pop3d openssl python3 and GNU time (/usr/bin/time).
#
# The replicas benchmark (issue 12) runs only when asked for: 100 accounts x
# 50 messages through 1, 2 and 4 `popferry run` replicas on one PostgreSQL
# ledger, and the takeover after a SIGKILL (~6 min; needs postgresql too,
# and root for the "other node" takeover, which uses `unshare --uts`):
#
#   BENCH_ONLY=replicas scripts/bench.sh   # only the replicas benchmark
#   BENCH_ONLY=all scripts/bench.sh        # migrate, then replicas
#
# Its knobs: BENCH_ACCOUNTS, BENCH_MESSAGES, BENCH_REPLICAS, BENCH_CONCURRENCY,
# BENCH_POLL, BENCH_LEASE_TTL, BENCH_TAKEOVER_POLL, BENCH_SKIP
# (throughput,takeover,node); see benches/replicas.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -x /usr/bin/time ]]; then
  echo "scripts/bench.sh: /usr/bin/time is missing: sudo apt-get install -y time" >&2
  exit 2
fi
# `cargo bench` builds the popferry binary with the bench (release) profile too.
case "${BENCH_ONLY:-migrate}" in
  migrate) exec cargo bench --bench migrate "$@" ;;
  replicas) exec cargo bench --bench replicas "$@" ;;
  all)
    cargo bench --bench migrate "$@"
    exec cargo bench --bench replicas "$@"
    ;;
  *)
    echo "scripts/bench.sh: BENCH_ONLY is migrate (the default), replicas or all" >&2
    exit 2
    ;;
esac
