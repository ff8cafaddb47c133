#!/bin/bash
# First-boot bootstrap of the production host (cloud-init user data).
#
# ProductionService prepends validated settings to this file:
#   APP_USER, APP_DIR, SERVICE, PORT, RUNTIME (node20 | python3.12), START_COMMAND,
#   SLOT_PORTS ("blue green"), NGINX_UPSTREAM, DEPLOY_LOG, APP_USES_INSTANCE_ROLE (yes | no),
#   IMDS_RULESET (scripts/host/imds-root-only.nft), STACK, REGION, HEALTH_PATH,
#   LIVE_RELEASE_PARAMETER and DOCUMENT (the first deploy: FIRST_DEPLOY is
#   scripts/host/devprod-first-deploy.sh, gzip + base64 for the 16 KB limit: a
#   repository file, never configuration), TOOLS_DOCUMENT (the SSM document that
#   installs scripts/host/devprod-proxy-metrics.py), PROXY_METRICS_STATE, ACCESS_LOG
# No secrets pass through here: the app's secrets are written to
# APP_DIR/shared/env from Parameter Store by deploy.sh at each deploy.
#
# The app runs as APP_USER in one of two slots, the systemd template instances
# SERVICE@blue and SERVICE@green, each on its own loopback port (SLOT_PORTS);
# nginx (the OS package) listens on PORT and proxies to the live slot. deploy.sh
# writes nginx's server block and upstream file and the slots' drop-ins at each
# deploy. The app may write only APP_DIR/shared/data; root owns every release,
# current, the slots' env files, the units, nginx's configuration and the
# deploy log (the layout is described in scripts/deploy.sh). Unless the app
# uses the instance role, only root reaches the instance metadata service.
set -Eeuo pipefail

: "${APP_USER:?}" "${APP_DIR:?}" "${SERVICE:?}" "${PORT:?}" "${RUNTIME:?}" "${START_COMMAND:?}"
: "${SLOT_PORTS:?}" "${NGINX_UPSTREAM:?}" "${DEPLOY_LOG:?}" "${APP_USES_INSTANCE_ROLE:?}" "${IMDS_RULESET:?}"

# The metadata service, IPv4 and IPv6 (also in scripts/host/imds-root-only.nft).
IMDS_ADDRESSES="169.254.169.254 fd00:ec2::254"
IMDS_GUARD=devprod-imds-guard
IMDS_RULESET_FILE=/etc/nftables/devprod-imds-root-only.nft

log() { printf '%s devprod-bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
trap 'log "failed at line ${LINENO}"' ERR

create_layout() {
  log "app user ${APP_USER} and ${APP_DIR}"
  id "${APP_USER}" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --home-dir "${APP_DIR}" --shell /sbin/nologin "${APP_USER}"
  install -d -m 0755 -o root -g root "${APP_DIR}" "${APP_DIR}/releases" "${APP_DIR}/shared" "$(dirname "${DEPLOY_LOG}")" \
    "${APP_DIR}/slots" "${APP_DIR}/slots/blue" "${APP_DIR}/slots/green"
  install -d -m 0700 -o root -g root "${APP_DIR}/.deploy"
  install -d -m 0750 -o "${APP_USER}" -g "${APP_USER}" "${APP_DIR}/shared/data"
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

# A compromised app must not take the instance role's credentials: a host
# firewall rule refuses the metadata service to every uid but root (deploy.sh
# and the SSM agent run as root). Loaded before the network comes up.
install_imds_guard() {
  if [[ "${APP_USES_INSTANCE_ROLE}" == yes ]]; then
    log "the app uses the instance role: metadata service open to all users"
    return 0
  fi
  log "metadata service: root only (${IMDS_RULESET_FILE})"
  command -v nft >/dev/null || dnf -y -q install nftables
  install -d -m 0755 /etc/nftables
  printf '%s' "${IMDS_RULESET}" >"${IMDS_RULESET_FILE}"
  chmod 0644 "${IMDS_RULESET_FILE}"
  cat >"/etc/systemd/system/${IMDS_GUARD}.service" <<UNIT
[Unit]
Description=devprod: only root reaches the instance metadata service
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f ${IMDS_RULESET_FILE}
ExecReload=/usr/sbin/nft -f ${IMDS_RULESET_FILE}

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now "${IMDS_GUARD}.service"
}

# The slots: one template unit, an instance per slot. The app can write only
# shared/data; everything else it sees read-only, and (unless it uses the
# instance role) it cannot reach the metadata service even if the firewall
# table were gone. deploy.sh enables the live slot (so it starts at boot) and
# writes each slot's drop-in (port, start command).
install_unit() {
  log "systemd template unit ${SERVICE}@.service (slots blue, green)"
  local imds="IPAddressDeny=${IMDS_ADDRESSES}" command
  if [[ "${APP_USES_INSTANCE_ROLE}" == yes ]]; then
    imds="# IPAddressDeny: none, the app uses the instance role"
  fi
  # systemd expands % specifiers and $ variables in ExecStart=; doubled, they are literal.
  command="${START_COMMAND//%/%%}"
  command="${command//\$/\$\$}"
  cat >"/etc/systemd/system/${SERVICE}@.service" <<UNIT
[Unit]
Description=devprod application, slot %i (${APP_DIR}/slots/%i/release)
After=network-online.target
Wants=network-online.target

[Service]
User=${APP_USER}
Group=${APP_USER}
WorkingDirectory=${APP_DIR}/slots/%i/release
Environment=PORT=${SLOT_PORTS%% *}
Environment=DATA_DIR=${APP_DIR}/shared/data
Environment=DEVPROD_SLOT=%i
EnvironmentFile=-${APP_DIR}/slots/%i/env
ExecStart=/bin/bash -c '${command}'
Restart=on-failure
RestartSec=2
UMask=0027
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths=${APP_DIR}/shared/data
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
${imds}

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
}

# nginx from the OS packages listens on PORT; deploy.sh writes its server
# block (conf.d/devprod.conf) and the upstream file at the first deploy.
# Both directories and every file in them are root's.
install_proxy() {
  log "nginx (the OS package) in front of the slots"
  command -v nginx >/dev/null || dnf -y -q install nginx
  install -d -m 0755 -o root -g root /etc/nginx/conf.d "$(dirname "${NGINX_UPSTREAM}")"
  systemctl enable --now nginx
}

# Runs one step of an SSM Command document of this stack as the SSM agent would
# (the host role may read this stack's documents only), from a root-only file.
run_document_step() {
  local content work
  content=$(aws ssm get-document --region "${REGION}" --name "$1" --document-format JSON \
    --query Content --output text) || return 1
  work=$(mktemp -d)
  python3 -c '
import json, sys
steps = [s for s in json.loads(sys.stdin.read())["mainSteps"] if s["name"] == sys.argv[1]]
print("\n".join(steps[0]["inputs"]["runCommand"]))
' "$2" <<<"${content}" >"${work}/step" && bash "${work}/step"
  local status=$?
  rm -rf "${work}"
  return "${status}"
}

# The proxy's request, 5xx and health counts, once a minute, to CloudWatch
# (what the Bake alarms watch when there is no load balancer). The script
# comes from the host-tools document (too large for user data).
install_proxy_metrics() {
  if [[ -z "${TOOLS_DOCUMENT:-}" ]] || ! run_document_step "${TOOLS_DOCUMENT}" install; then
    log "host tools not installed (document ${TOOLS_DOCUMENT:-none})"
    return 0
  fi
  if [[ ! -x /usr/local/libexec/devprod/devprod-proxy-metrics.py ]]; then
    log "no proxy metrics script in this build"
    return 0
  fi
  log "proxy metrics, once a minute"
  # The script's only dependency besides python3; AL2023 packages it.
  python3 -c 'import boto3' 2>/dev/null || dnf -y -q install python3-boto3
  # Root only: the offset file decides what is counted.
  install -d -m 0700 -o root -g root "$(dirname "${PROXY_METRICS_STATE}")"
  cat >/etc/systemd/system/devprod-proxy-metrics.service <<UNIT
[Unit]
Description=devprod: publish the proxy's metrics for stack ${STACK}

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/libexec/devprod/devprod-proxy-metrics.py --stack ${STACK} --log ${ACCESS_LOG} --health-url http://127.0.0.1:${PORT}${HEALTH_PATH} --state ${PROXY_METRICS_STATE} --region ${REGION}
UNIT
  cat >/etc/systemd/system/devprod-proxy-metrics.timer <<UNIT
[Unit]
Description=devprod: proxy metrics once a minute

[Timer]
OnBootSec=60
OnUnitActiveSec=60
AccuracySec=5

[Install]
WantedBy=timers.target
UNIT
  systemctl daemon-reload
  systemctl enable --now devprod-proxy-metrics.timer
}

# A host that boots into a running production (a replacement, host N of a
# rollout) serves the live release before it can pass a health check.
first_deploy() {
  if [[ -z "${DOCUMENT:-}" ]]; then
    return 0
  fi
  install -d -m 0755 -o root -g root /usr/local/libexec/devprod
  printf '%s' "${FIRST_DEPLOY}" | base64 -d | gunzip >/usr/local/libexec/devprod/devprod-first-deploy.sh
  chmod 0755 /usr/local/libexec/devprod/devprod-first-deploy.sh
  # A failed first deploy leaves the host unhealthy (no server block), not the boot failed:
  # operators see it in the deploy log and redeploy.
  LIVE_RELEASE_PARAMETER="${LIVE_RELEASE_PARAMETER}" DOCUMENT="${DOCUMENT}" REGION="${REGION}" \
    /usr/local/libexec/devprod/devprod-first-deploy.sh || log "first deploy failed (exit $?)"
}

main() {
  create_layout
  install_runtime
  install_imds_guard
  install_unit
  install_proxy
  install_proxy_metrics
  first_deploy
  log "bootstrap done; the first deploy starts the app in slot blue and points nginx at it"
}

main "$@"
