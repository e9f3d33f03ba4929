#!/bin/sh
# Quick start, command 1: installs what is missing (Dovecot and Postfix from Debian),
# builds coi-proxy, and runs the demo: two mail domains on loopback, each an unmodified
# Dovecot and Postfix with coi-proxy in front, and a chat message crossing from one to
# the other, printed line by line.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --example demo
