#!/bin/bash
# Installs (or updates) the idle stop on a developer box: devprod-idle-stop,
# devprod-keepawake, their systemd timer and settings.
#
# Carried by the box's SSM document (components/developer_instance.py), which
# stages the two scripts in STAGED and runs this as root, on the first agent
# start and again after every `pulumi up` that changes a setting or a script.
# User data is not the carrier: it runs once and is capped at 16 KB.
#
# Settings (environment, validated by the document's allowedPattern):
#   STAGED               root-only directory holding devprod-idle-stop.py and devprod-keepawake.sh
#   IDLE_MINUTES         0 turns the idle stop off
#   CPU_PERCENT          busy share below which the box counts as idle
#   WARN_MINUTES         warn terminals this long before the stop
#   KEEPAWAKE_PROCESSES  space-separated process names that keep the box up
#   DESTDIR              prefix for every path written (tests); empty on a box
# Exit codes: 0 installed, 1 a step failed (logged).
set -Eeuo pipefail

: "${STAGED:?}" "${IDLE_MINUTES:?}" "${CPU_PERCENT:?}" "${WARN_MINUTES:?}"
KEEPAWAKE_PROCESSES="${KEEPAWAKE_PROCESSES:-}"
DESTDIR="${DESTDIR:-}"
LIB_DIR="${DESTDIR}/usr/local/lib/devprod"
UNIT_DIR="${DESTDIR}/etc/systemd/system"

log() { printf '%s devprod-box-setup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
trap 'log "failed at line ${LINENO}"' ERR

# Write a file whole or not at all: the timer may fire while we update.
put() {
  local mode="$1" target="$2" temporary
  temporary="$(mktemp "$(dirname "${target}")/.devprod.XXXXXX")"
  cat >"${temporary}"
  chmod "${mode}" "${temporary}"
  mv -f "${temporary}" "${target}"
}

install_scripts() {
  log "installing devprod-idle-stop and devprod-keepawake"
  install -d -m 0755 "${LIB_DIR}" "${DESTDIR}/usr/local/bin" "${DESTDIR}/etc/devprod" "${UNIT_DIR}" "${DESTDIR}/etc/tmpfiles.d"
  put 0755 "${LIB_DIR}/devprod-idle-stop.py" <"${STAGED}/devprod-idle-stop.py"
  put 0755 "${DESTDIR}/usr/local/bin/devprod-keepawake" <"${STAGED}/devprod-keepawake.sh"
}

write_settings() {
  log "idle stop after ${IDLE_MINUTES} minutes below ${CPU_PERCENT}% CPU, warning ${WARN_MINUTES} minutes before"
  put 0644 "${DESTDIR}/etc/devprod/idle-stop.conf" <<EOF
# Written by devprod (the box's SSM association); edits are overwritten on the next pulumi up.
IDLE_MINUTES=${IDLE_MINUTES}
CPU_PERCENT=${CPU_PERCENT}
WARN_MINUTES=${WARN_MINUTES}
KEEPAWAKE_PROCESSES='${KEEPAWAKE_PROCESSES}'
EOF
}

write_units() {
  log "writing the timer, the service and the runtime directories"
  # /run is a tmpfs: markers and the countdown start afresh at every boot, so
  # a box started again is never powered off for idleness from before its stop.
  # The marker directory is sticky and unlistable: anyone may leave a marker,
  # nobody may remove or read another's.
  put 0644 "${DESTDIR}/etc/tmpfiles.d/devprod.conf" <<'EOF'
d /run/devprod 0755 root root -
d /run/devprod/keepawake 1733 root root -
d /run/devprod/idle-stop 0700 root root -
EOF
  put 0644 "${UNIT_DIR}/devprod-idle-stop.service" <<'EOF'
[Unit]
Description=devprod: power this box off once it has been idle for its window

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/lib/devprod/devprod-idle-stop.py
EOF
  put 0644 "${UNIT_DIR}/devprod-idle-stop.timer" <<'EOF'
[Unit]
Description=devprod: check every minute whether this box is idle

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
EOF
}

enable_timer() {
  if [[ -n "${DESTDIR}" ]]; then
    log "DESTDIR set: not touching systemd"
    return 0
  fi
  log "enabling devprod-idle-stop.timer"
  systemd-tmpfiles --create /etc/tmpfiles.d/devprod.conf
  systemctl daemon-reload
  systemctl enable --now devprod-idle-stop.timer
}

main() {
  install_scripts
  write_settings
  write_units
  enable_timer
  log "idle stop installed"
}

main "$@"
