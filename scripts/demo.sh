#!/bin/sh
# Quick start, command 1: installs what is missing (Dovecot from Debian), builds coi-proxy,
# and runs the demo: a private Dovecot on loopback, coi-proxy in front of it, and a
# scripted client whose COI session is printed line by line.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --example demo
