#!/usr/bin/env bash
# Active HTTP health checks at scale: 10 000 instances checked every 10 s against one local endpoint;
# checks/s sustained, spread of check start times, server CPU and memory. Real release binary.
# Env: ROUNDS=3 COUNT=10000 CLIENTS=64 INTERVAL=10 DURATION=30. See benches/checks.rs.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
exec cargo bench --bench checks "$@"
