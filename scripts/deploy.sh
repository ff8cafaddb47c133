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
#   APP_USER=app                 runs the install step and owns shared/data; must exist, never root
#   SERVICE=app                  systemd unit restarted after a switch
#   SYSTEMCTL=systemctl          command used to restart it
#   HEALTH_URL=http://127.0.0.1:8000/health
#   HEALTH_TIMEOUT=60            seconds allowed to become healthy
#   HEALTH_PASSES=3              consecutive 2xx answers required
#   HEALTH_INTERVAL=1            seconds between probes
#   KEEP_RELEASES=5              releases kept on disk (live and previous never pruned)
#   ARTIFACT_BUCKET=             s3 bucket holding <prefix>/<sha>.tar.gz and .sha256
#   ARTIFACT_PREFIX=releases
#   INSTALL_COMMAND=             run inside the new release before the switch, as APP_USER,
#   INSTALL_TIMEOUT=600          with a clean environment, killed (with all it started) after this many seconds
#   PARAMETER_PATH=              Parameter Store path written to shared/env (root:APP_USER 0640)
#   DEPLOY_LOG=/var/log/devprod/deploys.log   one line per run; its directory must be root's alone
#   LOCK_WAIT=0                  seconds to wait for another deploy to finish
#   UNIT_DROPIN=                 systemd drop-in written before each restart (empty: none), so
#   APP_PORT=                    a changed port or start command takes effect at the next
#   APP_START_COMMAND=           deploy without touching the host's user data
#   AWS_CLI=aws
#
# Runs as root; needs python3 (checks archive members), GNU tar, flock, setpriv,
# unshare and timeout (util-linux, coreutils: all on AL2023).
#
# Host layout. Root owns everything but shared/data, so the running app cannot
# change any release, current, the env file or the deploy state:
#   APP_DIR/                  root 0755
#   APP_DIR/releases/<sha>/   root:APP_USER, no group/world write, no setuid/setgid; the
#                             release is APP_USER's only while its install step runs
#   APP_DIR/current           symlink to releases/<sha>, replaced by rename
#   APP_DIR/shared/           root 0755
#   APP_DIR/shared/env        root:APP_USER 0640, replaced by rename
#   APP_DIR/shared/data/      APP_USER 0750: the app's writable data; root never writes inside
#   APP_DIR/.deploy/          root 0700: lock, previous release, downloads, temporary files
#
# Exit codes:
#   0   success (or the live release redeployed and healthy)
#   10  failed after the switch; rolled back to the previous release, which is healthy
#   11  failed before the switch; nothing changed on the host (download, checksum, an
#       archive refused for unsafe members, install step failed or timed out, env file)
#   12  another deploy holds the lock
#   13  bad input or settings (not root, APP_USER missing or root, DEPLOY_LOG's
#       directory writable by others)
#   14  failed after the switch and no healthy previous release to return to
#   15  the live release was redeployed (no-op) but is not healthy
set -Eeuo pipefail
# What root creates here must never be group/world-writable, whatever umask the caller left.
umask 0022

readonly EXIT_ROLLED_BACK=10 EXIT_BEFORE_SWITCH=11 EXIT_BUSY=12 EXIT_BAD_INPUT=13 EXIT_NO_ROLLBACK=14 EXIT_UNHEALTHY=15

ACTION="${ACTION:-deploy}"
RELEASE="${RELEASE:-}"
APP_DIR="${APP_DIR:-/srv/app}"
APP_USER="${APP_USER:-app}"
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
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-600}"
PARAMETER_PATH="${PARAMETER_PATH:-}"
DEPLOY_LOG="${DEPLOY_LOG:-/var/log/devprod/deploys.log}"
LOCK_WAIT="${LOCK_WAIT:-0}"
UNIT_DROPIN="${UNIT_DROPIN:-}"
APP_PORT="${APP_PORT:-}"
APP_START_COMMAND="${APP_START_COMMAND:-}"
AWS_CLI="${AWS_CLI:-aws}"

RELEASES="${APP_DIR}/releases"
CURRENT="${APP_DIR}/current"
SHARED="${APP_DIR}/shared"
ENV_FILE="${SHARED}/env"
DATA_DIR="${SHARED}/data"
STATE_DIR="${APP_DIR}/.deploy"
PREVIOUS_FILE="${STATE_DIR}/previous"
LOCK_FILE="${STATE_DIR}/lock"
INCOMING="${STATE_DIR}/incoming"
# The install step gets this PATH and nothing else of root's environment.
INSTALL_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
APP_UID=""
APP_GID=""

log() { printf '%s deploy[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*" >&2; }

# One line per run in the deploy log (D8): when, action, release, result.
record() {
  printf '%s action=%s release=%s result=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${ACTION}" "${RELEASE:-none}" "$1" >>"${DEPLOY_LOG}"
}

finish() {
  local code="$1" result="$2"
  record "${result}"
  log "${result} (exit ${code})"
  exit "${code}"
}

bad_input() { log "$*"; exit "${EXIT_BAD_INPUT}"; }

validate_input() {
  [[ "${ACTION}" == deploy || "${ACTION}" == rollback ]] || bad_input "ACTION must be deploy or rollback, got '${ACTION}'"
  if [[ -n "${RELEASE}" && ! "${RELEASE}" =~ ^[0-9a-f]{7,40}$ ]]; then
    bad_input "RELEASE must be a git sha (7-40 lowercase hex), got '${RELEASE}'"
  fi
  if [[ "${ACTION}" == deploy && -z "${RELEASE}" ]]; then
    bad_input "deploy needs RELEASE"
  fi
  for number in "${HEALTH_TIMEOUT}" "${HEALTH_PASSES}" "${KEEP_RELEASES}" "${LOCK_WAIT}" "${INSTALL_TIMEOUT}"; do
    [[ "${number}" =~ ^[0-9]+$ ]] || bad_input "numeric setting expected, got '${number}'"
  done
  (( KEEP_RELEASES >= 2 )) || bad_input "KEEP_RELEASES must be at least 2"
  (( INSTALL_TIMEOUT >= 1 )) || bad_input "INSTALL_TIMEOUT must be at least 1 second"
  if [[ -n "${UNIT_DROPIN}" ]]; then
    [[ "${APP_PORT}" =~ ^[0-9]{2,5}$ ]] || bad_input "UNIT_DROPIN needs APP_PORT, got '${APP_PORT}'"
    # The command goes inside single quotes in the unit: refuse anything that could end them.
    [[ -n "${APP_START_COMMAND}" && "${APP_START_COMMAND}" != *"'"* && "${APP_START_COMMAND}" != *$'\n'* ]] ||
      bad_input "UNIT_DROPIN needs a one-line APP_START_COMMAND without single quotes"
  fi
  [[ "${DEPLOY_LOG}" == /* ]] || bad_input "DEPLOY_LOG must be an absolute path, got '${DEPLOY_LOG}'"
  (( EUID == 0 )) || bad_input "deploy.sh runs as root (it owns the releases and hands the install step to APP_USER)"
  [[ "${APP_USER}" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || bad_input "APP_USER must be a user name, got '${APP_USER}'"
  APP_UID="$(id -u "${APP_USER}" 2>/dev/null)" || bad_input "APP_USER '${APP_USER}' does not exist"
  APP_GID="$(id -g "${APP_USER}")"
  # Everything below relies on the app user not being root.
  (( APP_UID != 0 )) || bad_input "APP_USER must not be root (uid 0), got '${APP_USER}'"
}

# True when only root can change entries in the directory $1.
root_only_dir() {
  local owner mode
  read -r owner mode < <(stat -L -c '%u %a' "$1")
  [[ "${owner}" == 0 ]] && (( (8#${mode} & 8#022) == 0 ))
}

# The deploy log is what operators and `devprod status` trust: if the app user
# could write it or its directory, it could forge lines or swap the file.
prepare_log() {
  local dir
  dir="$(dirname "${DEPLOY_LOG}")"
  [[ -d "${dir}" ]] || install -d -m 0755 -o 0 -g 0 "${dir}"
  root_only_dir "${dir}" || bad_input "DEPLOY_LOG's directory ${dir} must be root's and not group/world-writable"
  [[ ! -L "${DEPLOY_LOG}" ]] || bad_input "DEPLOY_LOG ${DEPLOY_LOG} is a symbolic link"
}

# D1: one deploy at a time. The lock is on a file that is never deleted, so
# there is no window where two runs hold two different files. It lives in a
# root-only directory: flock works on any readable file, so a lock file the
# app user could open would let it block every deploy.
take_lock() {
  install -d -m 0755 -o 0 -g 0 "${APP_DIR}"
  install -d -m 0700 -o 0 -g 0 "${STATE_DIR}"
  exec 9>>"${LOCK_FILE}"
  if ! flock -w "${LOCK_WAIT}" 9; then
    log "another deploy is running"
    record busy
    exit "${EXIT_BUSY}"
  fi
}

# The layout in the header, also on hosts set up when the app user owned
# shared/: that directory is taken back first, so nothing checked after it can
# be changed by a link or file the app plants meanwhile.
prepare_layout() {
  install -d -m 0755 -o 0 -g 0 "${RELEASES}" "${SHARED}"
  # systemd reads the env file as root: only a regular file root wrote may stay there.
  if [[ -L "${ENV_FILE}" || ( -e "${ENV_FILE}" && ! -f "${ENV_FILE}" ) ]] ||
     [[ -f "${ENV_FILE}" && "$(stat -c %u "${ENV_FILE}")" != 0 ]]; then
    log "removing ${ENV_FILE}: not a regular file written by root"
    rm -rf "${ENV_FILE}"
  fi
  rm -rf "${SHARED}/.env.tmp"  # the old temporary path, maybe a planted link
  if [[ -L "${DATA_DIR}" || ( -e "${DATA_DIR}" && ! -d "${DATA_DIR}" ) ]]; then
    log "removing ${DATA_DIR}: not a directory"
    rm -f "${DATA_DIR}"
  fi
  [[ -d "${DATA_DIR}" ]] || install -d -m 0750 -o "${APP_UID}" -g "${APP_GID}" "${DATA_DIR}"
  # Hosts set up before this layout kept the previous release beside current.
  if [[ -f "${APP_DIR}/.previous" && ! -e "${PREVIOUS_FILE}" ]]; then
    mv -T "${APP_DIR}/.previous" "${PREVIOUS_FILE}"
  fi
}

live_release() {
  if [[ -L "${CURRENT}" ]]; then basename "$(readlink "${CURRENT}")"; fi
}

# Leftovers of a run that was killed: never complete, never live.
clean_leftovers() {
  rm -rf "${INCOMING}" "${APP_DIR}/.incoming" "${RELEASES}"/*.partial "${RELEASES}"/*.home \
    "${APP_DIR}"/current.tmp.* "${STATE_DIR}"/env.* "${STATE_DIR}"/complete.*
}

# Member and tree rules for a release archive (D9), in python3 because the
# text of `tar -tv` is ambiguous (names may hold " -> " or newlines).
#   release_check archive FILE   the archive's member list, before anything is unpacked
#   release_check tree DIR       what GNU tar actually wrote, in case it read the archive
#                                differently from Python
release_check() {
  python3 -I - "$@" <<'PY'
import os, stat, sys, tarfile, zlib

mode, path = sys.argv[1], sys.argv[2]
problems = []

def escapes(target, member_dir):
    """A link target that is absolute or, read from the link's directory, leaves the release."""
    if target.startswith("/"):
        return True
    resolved = os.path.normpath(os.path.join(member_dir, target))
    return resolved == ".." or resolved.startswith("../")

def check_archive():
    links = set()
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            name = member.name
            parts = [p for p in name.split("/") if p not in ("", ".")]
            clean = "/".join(parts)
            # An absolute name is written where it points by any tar that keeps the leading /.
            if name.startswith("/"):
                problems.append(f"{name!r}: absolute member name")
            # A .. component climbs out of the release directory.
            elif ".." in parts:
                problems.append(f"{name!r}: '..' in member name")
            # A member below a link member is written wherever that link points.
            elif any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                problems.append(f"{name!r}: below a link member")
            # Device nodes made by root would hand the app raw disks or memory; a fifo has no place in code.
            if member.ischr() or member.isblk() or member.isfifo():
                problems.append(f"{name!r}: device node or fifo")
            # A hard link may name any file, even outside the release, and shares its inode:
            # the ownership and mode pass would then change that file too.
            elif member.islnk():
                problems.append(f"{name!r}: hard link to {member.linkname!r}")
            # A link out of the release lets the app, or root following it, reach files elsewhere.
            elif member.issym():
                links.add(clean)
                if escapes(member.linkname, os.path.dirname(clean)):
                    problems.append(f"{name!r}: symlink to {member.linkname!r} leaves the release")
            # Only files, directories and links are code; anything else is refused rather than guessed at.
            elif not (member.isreg() or member.isdir()):
                problems.append(f"{name!r}: member type {member.type!r} not allowed")

def check_tree():
    root = os.path.realpath(path)
    for here, dirs, files in os.walk(root):
        for entry in dirs + files:
            full = os.path.join(here, entry)
            info = os.lstat(full)
            shown = os.path.relpath(full, root)
            if stat.S_ISLNK(info.st_mode):
                # Resolved on disk, so a chain of links that each look harmless is caught too.
                real = os.path.realpath(full)
                if os.readlink(full).startswith("/") or os.path.commonpath([root, real]) != root:
                    problems.append(f"{shown!r}: symlink leaves the release")
            elif stat.S_ISDIR(info.st_mode):
                pass
            elif not stat.S_ISREG(info.st_mode):
                problems.append(f"{shown!r}: not a file, directory or link")
            elif info.st_nlink > 1:
                problems.append(f"{shown!r}: hard link")

try:
    check_archive() if mode == "archive" else check_tree()
except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
    problems.append(f"unreadable: {exc}")
for problem in problems[:20]:
    print(f"refused: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

# D6: a failed download or a checksum mismatch fails before the switch.
download_release() {
  local sha="$1" incoming="${INCOMING}/$1"
  mkdir -p "${incoming}" || return 1
  log "downloading s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz"
  "${AWS_CLI}" s3 cp --only-show-errors "s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz" "${incoming}/release.tar.gz" || { log "download failed"; return 1; }
  "${AWS_CLI}" s3 cp --only-show-errors "s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz.sha256" "${incoming}/release.sha256" || { log "checksum download failed"; return 1; }
  local expected actual
  expected="$(awk '{print $1; exit}' "${incoming}/release.sha256")"
  actual="$(sha256sum "${incoming}/release.tar.gz" | awk '{print $1}')"
  if [[ "${expected}" != "${actual}" ]]; then
    log "checksum mismatch: expected ${expected}, got ${actual}"; return 1
  fi
}

# D9: unpacked inside the root-only state directory, so the app user cannot
# see or touch a file before the checks and the mode pass are done.
unpack_release() {
  local sha="$1" archive="${INCOMING}/$1/release.tar.gz" tree="${INCOMING}/$1/tree"
  log "checking the archive's members"
  release_check archive "${archive}" || { log "archive refused"; return 1; }
  mkdir "${tree}" || return 1
  # --no-same-owner: files are root's, whatever owner the archive names.
  # --no-same-permissions: the archive's modes pass through root's umask.
  # --no-xattrs etc.: a security.capability attribute would act like a setuid bit.
  tar --extract --gzip --file "${archive}" --directory "${tree}" \
    --no-same-owner --no-same-permissions --no-xattrs --no-acls --no-selinux || { log "unpacking failed"; return 1; }
  release_check tree "${tree}" || { log "unpacked release refused"; return 1; }
  # Whatever tar kept: no setuid, setgid or sticky bit, nothing group/world-writable.
  chmod -R a-st,go-w "${tree}" || return 1
  mv -T "${tree}" "${RELEASES}/${sha}.partial" || return 1
}

# The install step runs app and dependency code, so it gets what the app gets:
# APP_USER, no capabilities, no root environment, no lock descriptor, no stdin
# (under SSM, stdin is the rest of this script). In its own PID namespace,
# whose end kills everything it started, daemons and setsid() included: so
# the timeout is real and nothing it left can write the release after it.
install_release() {
  [[ -n "${INSTALL_COMMAND}" ]] || return 0
  local sha="$1" partial="${RELEASES}/$1.partial" home="${RELEASES}/$1.home" status=0
  chown -R -h "${APP_UID}:${APP_GID}" "${partial}" || return 1
  # A fresh HOME per install (package caches): nothing persists from one release to the next.
  install -d -m 0700 -o "${APP_UID}" -g "${APP_GID}" "${home}" || return 1
  log "install step as ${APP_USER} (at most ${INSTALL_TIMEOUT}s): ${INSTALL_COMMAND}"
  (
    cd "${partial}"
    exec unshare --pid --fork --kill-child -- \
      timeout --kill-after=5 "${INSTALL_TIMEOUT}" \
      setpriv --reuid="${APP_UID}" --regid="${APP_GID}" --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- \
      env -i HOME="${home}" PATH="${INSTALL_PATH}" LANG=C.UTF-8 USER="${APP_USER}" LOGNAME="${APP_USER}" \
      bash -c "${INSTALL_COMMAND}"
  ) </dev/null 9>&- || status=$?
  rm -rf "${home}"
  case "${status}" in
    0) return 0 ;;
    124|137) log "install step timed out after ${INSTALL_TIMEOUT}s" ;;
    *) log "install step failed (exit ${status})" ;;
  esac
  return 1
}

# From here on the release is root's: the app user may read and run it, never
# change it (its own or any other release).
seal_release() {
  local sha="$1" partial="${RELEASES}/$1.partial" marker
  # First shut the door, so no process of the app user (the live app is one)
  # can reach the tree by path while it is checked and handed over.
  chown -h 0:0 "${partial}" && chmod 0700 "${partial}" || return 1
  # A hard link made during the install may share its inode with a file
  # outside the release: the chown and chmod below would change that file.
  if [[ -n "$(find "${partial}" -xdev ! -type d -links +1 -print -quit)" ]]; then
    log "the install step left hard links in the release"; return 1
  fi
  chown -R -h "0:${APP_GID}" "${partial}" || return 1
  chmod -R a-st,go-w,g+rX "${partial}" && chmod 0755 "${partial}" || return 1
  # By rename: the install step may have left a link or a directory at that name.
  marker="$(mktemp "${STATE_DIR}/complete.XXXXXX")" || return 1
  date -u +%Y-%m-%dT%H:%M:%SZ >"${marker}" && chmod 0644 "${marker}" || return 1
  mv -T -f "${marker}" "${partial}/.devprod-complete" || { log "could not mark ${sha} complete"; return 1; }
  mv -T "${partial}" "${RELEASES}/${sha}" || return 1
  rm -rf "${INCOMING:?}/${sha}"
}

# Runs as the left side of `||`, where bash ignores set -e: every step
# checks its own commands and returns 1 on the first failure.
fetch_release() {
  local sha="$1"
  if [[ -f "${RELEASES}/${sha}/.devprod-complete" ]]; then
    log "release ${sha} already on disk"
    return 0
  fi
  rm -rf "${RELEASES:?}/${sha}"
  [[ -n "${ARTIFACT_BUCKET}" ]] || { log "ARTIFACT_BUCKET is not set"; return 1; }
  download_release "${sha}" && unpack_release "${sha}" && install_release "${sha}" && seal_release "${sha}"
}

# D10: built in root's own directory, then renamed into place. A rename
# replaces whatever is at the name, a planted link included, and never
# writes through it.
write_env_file() {
  [[ -n "${PARAMETER_PATH}" ]] || return 0
  log "writing ${ENV_FILE} from ${PARAMETER_PATH}"
  local tmp
  tmp="$(mktemp "${STATE_DIR}/env.XXXXXX")" || return 1
  "${AWS_CLI}" ssm get-parameters-by-path --path "${PARAMETER_PATH}" --recursive --with-decryption \
    --query 'Parameters[].[Name,Value]' --output text |
    awk -F '\t' '{ n = split($1, parts, "/"); printf "%s=%s\n", parts[n], $2 }' >"${tmp}" ||
    { log "reading Parameter Store failed"; rm -f "${tmp}"; return 1; }
  if ! { chown "0:${APP_GID}" "${tmp}" && chmod 0640 "${tmp}" && mv -T -f "${tmp}" "${ENV_FILE}"; }; then
    log "could not put ${ENV_FILE} in place"; rm -f "${tmp}"; return 1
  fi
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
    touch -h "${RELEASES}/${target}/.devprod-complete"
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
  prepare_log
  take_lock
  prepare_layout
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
