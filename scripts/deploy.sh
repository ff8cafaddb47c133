#!/usr/bin/env bash
# devprod on-host deploy: the only deploy logic. The SSM document carries this
# file verbatim; the tests run this same file against a real local app.
#
# Usage (everything through the environment, as the SSM document passes it):
#   ACTION=deploy   RELEASE=<git sha>            deploy.sh
#   ACTION=rollback [RELEASE=<git sha>]          deploy.sh   (default: the previous release)
#
# Settings (production defaults):
#   APP_DIR=/srv/app             releases/<sha>, shared/, current -> releases/<sha>
#   SERVICE=app                  systemd unit restarted after a switch
#   SYSTEMCTL=systemctl          command used to restart it
#   HEALTH_URL=http://127.0.0.1:8000/health
#   HEALTH_TIMEOUT=60            seconds allowed to become healthy
#   HEALTH_PASSES=3              consecutive 2xx answers required
#   HEALTH_INTERVAL=1            seconds between probes
#   KEEP_RELEASES=5              releases kept on disk (live and previous never pruned)
#   ARTIFACT_BUCKET=             s3 bucket holding <prefix>/<sha>.tar.gz and .sha256
#   ARTIFACT_PREFIX=releases
#   INSTALL_COMMAND=             run inside the new release before the switch
#   PARAMETER_PATH=              Parameter Store path written to shared/env (mode 0600)
#   LOCK_WAIT=0                  seconds to wait for another deploy to finish
#   UNIT_DROPIN=                 systemd drop-in written before each restart (empty: none), so
#   APP_PORT=                    a changed port or start command takes effect at the next
#   APP_START_COMMAND=           deploy without touching the host's user data
#   AWS_CLI=aws
#
# Exit codes:
#   0   success (or the live release redeployed and healthy)
#   10  failed after the switch; rolled back to the previous release, which is healthy
#   11  failed before the switch; nothing changed on the host
#   12  another deploy holds the lock
#   13  bad input
#   14  failed after the switch and no healthy previous release to return to
#   15  the live release was redeployed (no-op) but is not healthy
set -Eeuo pipefail

readonly EXIT_ROLLED_BACK=10 EXIT_BEFORE_SWITCH=11 EXIT_BUSY=12 EXIT_BAD_INPUT=13 EXIT_NO_ROLLBACK=14 EXIT_UNHEALTHY=15

ACTION="${ACTION:-deploy}"
RELEASE="${RELEASE:-}"
APP_DIR="${APP_DIR:-/srv/app}"
SERVICE="${SERVICE:-app}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
HEALTH_URL="${HEALTH_URL:-http://127.0.0.1:8000/health}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-60}"
HEALTH_PASSES="${HEALTH_PASSES:-3}"
HEALTH_INTERVAL="${HEALTH_INTERVAL:-1}"
KEEP_RELEASES="${KEEP_RELEASES:-5}"
ARTIFACT_BUCKET="${ARTIFACT_BUCKET:-}"
ARTIFACT_PREFIX="${ARTIFACT_PREFIX:-releases}"
INSTALL_COMMAND="${INSTALL_COMMAND:-}"
PARAMETER_PATH="${PARAMETER_PATH:-}"
LOCK_WAIT="${LOCK_WAIT:-0}"
UNIT_DROPIN="${UNIT_DROPIN:-}"
APP_PORT="${APP_PORT:-}"
APP_START_COMMAND="${APP_START_COMMAND:-}"
AWS_CLI="${AWS_CLI:-aws}"

RELEASES="${APP_DIR}/releases"
CURRENT="${APP_DIR}/current"
PREVIOUS_FILE="${APP_DIR}/.previous"
DEPLOY_LOG="${APP_DIR}/deploys.log"

log() { printf '%s deploy[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*" >&2; }

# One line per run in deploys.log (D8): when, action, release, result.
record() {
  printf '%s action=%s release=%s result=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${ACTION}" "${RELEASE:-none}" "$1" >>"${DEPLOY_LOG}"
}

finish() {
  local code="$1" result="$2"
  record "${result}"
  log "${result} (exit ${code})"
  exit "${code}"
}

validate_input() {
  [[ "${ACTION}" == deploy || "${ACTION}" == rollback ]] || { log "ACTION must be deploy or rollback, got '${ACTION}'"; exit "${EXIT_BAD_INPUT}"; }
  if [[ -n "${RELEASE}" && ! "${RELEASE}" =~ ^[0-9a-f]{7,40}$ ]]; then
    log "RELEASE must be a git sha (7-40 lowercase hex), got '${RELEASE}'"; exit "${EXIT_BAD_INPUT}"
  fi
  if [[ "${ACTION}" == deploy && -z "${RELEASE}" ]]; then
    log "deploy needs RELEASE"; exit "${EXIT_BAD_INPUT}"
  fi
  for number in "${HEALTH_TIMEOUT}" "${HEALTH_PASSES}" "${KEEP_RELEASES}" "${LOCK_WAIT}"; do
    [[ "${number}" =~ ^[0-9]+$ ]] || { log "numeric setting expected, got '${number}'"; exit "${EXIT_BAD_INPUT}"; }
  done
  (( KEEP_RELEASES >= 2 )) || { log "KEEP_RELEASES must be at least 2"; exit "${EXIT_BAD_INPUT}"; }
  if [[ -n "${UNIT_DROPIN}" ]]; then
    [[ "${APP_PORT}" =~ ^[0-9]{2,5}$ ]] || { log "UNIT_DROPIN needs APP_PORT, got '${APP_PORT}'"; exit "${EXIT_BAD_INPUT}"; }
    # The command goes inside single quotes in the unit: refuse anything that could end them.
    [[ -n "${APP_START_COMMAND}" && "${APP_START_COMMAND}" != *"'"* && "${APP_START_COMMAND}" != *$'\n'* ]] ||
      { log "UNIT_DROPIN needs a one-line APP_START_COMMAND without single quotes"; exit "${EXIT_BAD_INPUT}"; }
  fi
}

# D1: one deploy at a time. The lock is on a file that is never deleted, so
# there is no window where two runs hold two different files.
take_lock() {
  mkdir -p "${RELEASES}" "${APP_DIR}/shared"
  exec 9>>"${APP_DIR}/.deploy.lock"
  if ! flock -w "${LOCK_WAIT}" 9; then
    log "another deploy is running"
    record busy
    exit "${EXIT_BUSY}"
  fi
}

live_release() {
  if [[ -L "${CURRENT}" ]]; then basename "$(readlink "${CURRENT}")"; fi
}

# Leftovers of a run that was killed: never complete, never live.
clean_leftovers() {
  rm -rf "${APP_DIR}/.incoming" "${RELEASES}"/*.partial "${APP_DIR}"/current.tmp.*
}

fetch_release() {
  local sha="$1"
  local incoming="${APP_DIR}/.incoming/${sha}" partial="${RELEASES}/${sha}.partial"
  if [[ -f "${RELEASES}/${sha}/.devprod-complete" ]]; then
    log "release ${sha} already on disk"
    return 0
  fi
  rm -rf "${RELEASES:?}/${sha}"
  [[ -n "${ARTIFACT_BUCKET}" ]] || { log "ARTIFACT_BUCKET is not set"; return 1; }
  mkdir -p "${incoming}"
  log "downloading s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz"
  "${AWS_CLI}" s3 cp --only-show-errors "s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz" "${incoming}/release.tar.gz" || { log "download failed"; return 1; }
  "${AWS_CLI}" s3 cp --only-show-errors "s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz.sha256" "${incoming}/release.sha256" || { log "checksum download failed"; return 1; }
  local expected actual
  expected="$(awk '{print $1; exit}' "${incoming}/release.sha256")"
  actual="$(sha256sum "${incoming}/release.tar.gz" | awk '{print $1}')"
  if [[ "${expected}" != "${actual}" ]]; then
    log "checksum mismatch: expected ${expected}, got ${actual}"; return 1
  fi
  mkdir -p "${partial}"
  tar -xzf "${incoming}/release.tar.gz" -C "${partial}" || { log "unpacking failed"; return 1; }
  if [[ -n "${INSTALL_COMMAND}" ]]; then
    log "install step: ${INSTALL_COMMAND}"
    (cd "${partial}" && bash -c "${INSTALL_COMMAND}" 9>&-) || { log "install step failed"; return 1; }
  fi
  date -u +%Y-%m-%dT%H:%M:%SZ >"${partial}/.devprod-complete"
  mv -T "${partial}" "${RELEASES}/${sha}"
  rm -rf "${incoming}"
}

write_env_file() {
  [[ -n "${PARAMETER_PATH}" ]] || return 0
  log "writing shared/env from ${PARAMETER_PATH}"
  local tmp="${APP_DIR}/shared/.env.tmp"
  (
    umask 077
    "${AWS_CLI}" ssm get-parameters-by-path --path "${PARAMETER_PATH}" --recursive --with-decryption \
      --query 'Parameters[].[Name,Value]' --output text |
      awk -F '\t' '{ n = split($1, parts, "/"); printf "%s=%s\n", parts[n], $2 }' >"${tmp}"
  ) || { log "reading Parameter Store failed"; rm -f "${tmp}"; return 1; }
  chmod 0600 "${tmp}"
  mv -f "${tmp}" "${APP_DIR}/shared/env"
}

# D2: the live link is only ever replaced by rename, never removed.
switch_to() {
  local sha="$1" tmp="${APP_DIR}/current.tmp.$$"
  ln -sfn "releases/${sha}" "${tmp}"
  mv -T "${tmp}" "${CURRENT}"
  log "current -> releases/${sha}"
}

# The unit's port and start command follow the stack config: rewritten (by
# rename) only when they changed, then systemd reloads its units.
write_unit_settings() {
  [[ -n "${UNIT_DROPIN}" ]] || return 0
  local wanted
  wanted="$(printf '[Service]\nEnvironment=PORT=%s\nExecStart=\nExecStart=/bin/bash -c '"'"'%s'"'"'\n' "${APP_PORT}" "${APP_START_COMMAND}")"
  if [[ -f "${UNIT_DROPIN}" && "$(cat "${UNIT_DROPIN}")" == "${wanted}" ]]; then
    return 0
  fi
  log "writing ${UNIT_DROPIN} (port ${APP_PORT})"
  mkdir -p "$(dirname "${UNIT_DROPIN}")"
  printf '%s\n' "${wanted}" >"${UNIT_DROPIN}.tmp"
  mv -f "${UNIT_DROPIN}.tmp" "${UNIT_DROPIN}"
  "${SYSTEMCTL}" daemon-reload 9>&-
}

restart_service() {
  write_unit_settings || log "could not write ${UNIT_DROPIN}"
  log "restarting ${SERVICE}"
  # 9>&-: the lock fd must not leak into what the restart spawns, or a
  # long-lived process would hold the deploy lock forever.
  "${SYSTEMCTL}" restart "${SERVICE}" 9>&-
}

# D3: healthy means HEALTH_PASSES answers in a row before the deadline.
healthy() {
  local deadline=$(( SECONDS + HEALTH_TIMEOUT )) passes=0
  while (( SECONDS < deadline )); do
    if curl -fsS -o /dev/null --max-time 2 "${HEALTH_URL}" 2>/dev/null; then
      passes=$(( passes + 1 ))
      (( passes >= HEALTH_PASSES )) && return 0
    else
      passes=0
    fi
    sleep "${HEALTH_INTERVAL}"
  done
  log "not healthy within ${HEALTH_TIMEOUT}s (${HEALTH_URL})"
  return 1
}

# D5: keep the newest KEEP_RELEASES by completion time; never the live or previous one.
prune() {
  local live="$1" previous="$2" count=0 dir name
  while IFS= read -r dir; do
    name="$(basename "${dir}")"
    count=$(( count + 1 ))
    if (( count > KEEP_RELEASES )) && [[ "${name}" != "${live}" && "${name}" != "${previous}" ]]; then
      log "pruning ${name}"
      rm -rf "${dir}"
    fi
  done < <(find "${RELEASES}" -mindepth 2 -maxdepth 2 -name .devprod-complete -printf '%T@ %h\n' | sort -rn | cut -d' ' -f2-)
}

# Switch, restart, gate; on failure go back (D4) and still fail.
activate() {
  local target="$1" live="$2"
  switch_to "${target}"
  restart_service || true
  if healthy; then
    [[ -n "${live}" && "${live}" != "${target}" ]] && printf '%s\n' "${live}" >"${PREVIOUS_FILE}"
    touch "${RELEASES}/${target}/.devprod-complete"
    prune "${target}" "${live}"
    finish 0 success
  fi
  if [[ -z "${live}" || "${live}" == "${target}" ]]; then
    finish "${EXIT_NO_ROLLBACK}" "failed-no-previous-release"
  fi
  log "rolling back to ${live}"
  switch_to "${live}"
  restart_service || true
  if healthy; then
    finish "${EXIT_ROLLED_BACK}" "failed-rolled-back-to-${live}"
  fi
  finish "${EXIT_NO_ROLLBACK}" "failed-rollback-unhealthy"
}

main() {
  validate_input
  take_lock
  clean_leftovers
  local live previous target
  live="$(live_release)"
  log "${ACTION} ${RELEASE:-(previous)}; live: ${live:-none}"

  if [[ "${ACTION}" == rollback ]]; then
    previous="$(cat "${PREVIOUS_FILE}" 2>/dev/null || true)"
    target="${RELEASE:-${previous}}"
    RELEASE="${target}"
    if [[ -z "${target}" || ! -f "${RELEASES}/${target}/.devprod-complete" ]]; then
      finish "${EXIT_BEFORE_SWITCH}" "no-release-to-roll-back-to"
    fi
    if [[ "${target}" == "${live}" ]]; then
      healthy && finish 0 noop-healthy
      finish "${EXIT_UNHEALTHY}" noop-unhealthy
    fi
    activate "${target}" "${live}"
  fi

  # D7: the live release again is a no-op that re-checks health.
  if [[ "${RELEASE}" == "${live}" ]]; then
    healthy && finish 0 noop-healthy
    finish "${EXIT_UNHEALTHY}" noop-unhealthy
  fi
  # D6: every failure up to here leaves current untouched.
  fetch_release "${RELEASE}" || finish "${EXIT_BEFORE_SWITCH}" failed-before-switch
  write_env_file || finish "${EXIT_BEFORE_SWITCH}" failed-before-switch
  activate "${RELEASE}" "${live}"
}

main "$@"
