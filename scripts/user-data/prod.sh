#!/bin/bash
# First-boot bootstrap of the production host (cloud-init user data).
#
# ProductionService prepends validated settings to this file:
#   APP_USER, APP_DIR, SERVICE, PORT, RUNTIME (node20 | python3.12), START_COMMAND
# No secrets pass through here: the app's secrets are written to
# APP_DIR/shared/env from Parameter Store by deploy.sh at each deploy.
set -Eeuo pipefail

: "${APP_USER:?}" "${APP_DIR:?}" "${SERVICE:?}" "${PORT:?}" "${RUNTIME:?}" "${START_COMMAND:?}"

log() { printf '%s devprod-bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
trap 'log "failed at line ${LINENO}"' ERR

create_layout() {
  log "app user ${APP_USER} and ${APP_DIR}"
  id "${APP_USER}" >/dev/null 2>&1 || useradd --system --home-dir "${APP_DIR}" --shell /sbin/nologin "${APP_USER}"
  install -d -m 0755 "${APP_DIR}" "${APP_DIR}/releases"
  install -d -m 0750 -o "${APP_USER}" -g "${APP_USER}" "${APP_DIR}/shared"
}

install_runtime() {
  log "installing runtime ${RUNTIME}"
  case "${RUNTIME}" in
    node20) dnf -y -q install nodejs20 nodejs20-npm tar gzip
            # AL2023 names the binaries node-20/npm-20; the start command says node/npm.
            alternatives --set node /usr/bin/node-20 2>/dev/null || ln -sf /usr/bin/node-20 /usr/local/bin/node
            [[ -e /usr/local/bin/npm ]] || ln -sf /usr/bin/npm-20 /usr/local/bin/npm ;;
    python3.12) dnf -y -q install python3.12 python3.12-pip tar gzip ;;
    *) log "unknown runtime ${RUNTIME}"; return 1 ;;
  esac
  command -v aws >/dev/null || dnf -y -q install awscli-2
}

install_unit() {
  log "systemd unit ${SERVICE}"
  cat >"/etc/systemd/system/${SERVICE}.service" <<UNIT
[Unit]
Description=devprod application (${APP_DIR}/current)
After=network-online.target
Wants=network-online.target

[Service]
User=${APP_USER}
WorkingDirectory=${APP_DIR}/current
Environment=PORT=${PORT}
EnvironmentFile=-${APP_DIR}/shared/env
ExecStart=/bin/bash -c '${START_COMMAND}'
Restart=on-failure
RestartSec=2
NoNewPrivileges=true
ProtectSystem=full
PrivateTmp=true

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable "${SERVICE}.service"
}

main() {
  create_layout
  install_runtime
  install_unit
  log "bootstrap done; the first deploy starts the service"
}

main "$@"
