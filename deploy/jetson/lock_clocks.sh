#!/usr/bin/env bash
# Lock a Jetson's clocks for repeatable benchmarks (and restore them afterwards).
#
#   sudo bash deploy/jetson/lock_clocks.sh            # max power mode + clocks locked at maximum
#   sudo bash deploy/jetson/lock_clocks.sh --restore  # back to the stored settings
#
# MODE selects the nvpmodel power mode (default 0, MAXN on most modules; `nvpmodel -q --verbose` lists
# them). Record the mode with your results: latency depends on it.
set -euo pipefail

STATE="${STATE:-/var/tmp/edgekd-jetson-clocks.conf}"
MODE="${MODE:-0}"

if [[ $EUID -ne 0 ]]; then
    echo "error: run with sudo (nvpmodel and jetson_clocks need root)" >&2
    exit 2
fi
for tool in nvpmodel jetson_clocks; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found: is this a Jetson with JetPack?" >&2; exit 3; }
done

if [[ "${1:-}" == "--restore" ]]; then
    [[ -f "$STATE" ]] || { echo "error: no stored clock state at $STATE" >&2; exit 3; }
    jetson_clocks --restore "$STATE"
    echo "clocks restored from $STATE"
    exit 0
fi

[[ -f "$STATE" ]] || jetson_clocks --store "$STATE"
nvpmodel -m "$MODE"
jetson_clocks
nvpmodel -q
jetson_clocks --show
echo "clocks locked (power mode $MODE); restore with: sudo bash $0 --restore"
