#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which start their own
# Dovecot (POP3 + IMAP) per test on 127.0.0.1 and ephemeral ports.
#
#   scripts/test.sh                      # everything
#   scripts/test.sh --test harness       # extra arguments go to `cargo test`
#   TEST_THREADS=1 scripts/test.sh       # fewer tests at once (default: cargo's)
#
# Needs the Debian packages dovecot-core dovecot-imapd dovecot-pop3d openssl,
# and chromium for the status page tests (.ci/run installs them). Without them
# the integration tests FAIL and say how to install them; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v dovecot >/dev/null && [[ ! -x /usr/sbin/dovecot ]]; then
  echo "scripts/test.sh: dovecot is not installed; the integration tests will fail." >&2
  echo "  install it with: sudo apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d openssl" >&2
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "scripts/test.sh: chromium is not installed; the status page tests will fail." >&2
  echo "  install it with: sudo apt-get install -y chromium" >&2
fi

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if [[ -n ${TEST_THREADS:-} ]]; then
  export RUST_TEST_THREADS=$TEST_THREADS
fi

# Benches are built by `cargo build --all-targets` and clippy, and run on
# demand (scripts/bench.sh), not here.
# --no-fail-fast: one failing test binary must not hide the others.
exec cargo test --no-fail-fast --lib --bins --tests "$@"
