#!/bin/sh
# Quick start, command 2: the whole test suite. Installs what the tests need first
# (Dovecot, Postfix, mbsync from Debian), then runs format check, unit, integration,
# differential, fuzz-seed replay, layering and CLI tests, and a smoke run of each benchmark.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
echo "== benchmark smoke run (figures are meaningless in quick mode)"
for bench in imap_relay submission header_injection idle_wake peer_link; do
    cargo bench --locked --bench "$bench" -- --quick
done
