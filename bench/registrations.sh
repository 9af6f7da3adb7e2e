#!/usr/bin/env bash
# Registrations/s with 64 concurrent HTTP clients, memory vs sqlite store (alternating rounds, medians,
# sqlite/memory ratio), and start-up time + RSS with 100 000 stored registrations. Real release binary.
# Env: ROUNDS=3 CLIENTS=64 COUNT=20000 TYPES=100 STARTUP_N=100000 RESTARTS=3 PIPELINE=1.
# See benches/registrations.rs.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
exec cargo bench --bench registrations "$@"
