#!/usr/bin/env bash
# devprod on-host deploy: the only deploy logic. The SSM document carries this
# file verbatim; the tests run this same file against a real local nginx and app.
#
# Usage (everything through the environment, as the SSM document passes it):
#   ACTION=deploy   RELEASE=<git sha> CHECKSUM=<sha256>     deploy.sh
#   ACTION=rollback [RELEASE=<git sha> [CHECKSUM=<sha256>]] deploy.sh   (default: the previous release)
#
# Zero downtime: nginx listens on the public port and proxies to one of two
# app slots, the systemd template instances SERVICE@blue and SERVICE@green,
# each on its own loopback port. A deploy or rollback
#   1. starts the release in the idle slot, with its own env file,
#   2. gates it on the slot's own port: HEALTH_PASSES answers in a row, 2xx
#      only, from that release (when /health names a release, it must be this one),
#   3. replaces the upstream include file by rename, checks `nginx -t`, reloads
#      nginx (old workers finish what they accepted) and confirms through the
#      proxy that the release answers,
#   4. records the slot as live, waits until nginx's old workers have finished
#      their requests (at most DRAIN_TIMEOUT seconds), then stops the old slot.
# A release that fails its gate never receives traffic: its slot is stopped,
# the live slot was never touched. The state (live slot, its release, the
# previous release) is one file replaced by rename, so every run, even after
# one that was killed, first brings nginx and the slots back to it.
#
# CHECKSUM is the sha256 the pipeline published with the release (a document
# parameter). A download is verified against it alone, never against a file
# found beside the release. A release already on the host needs none.
#
# Settings (production defaults):
#   APP_DIR=/srv/app             releases/<sha>, slots/<slot>/, shared/, current -> releases/<sha>
#   APP_USER=app                 runs the install step and the app; must exist, never root
#   SERVICE=devprod-app          systemd template unit: SERVICE@blue, SERVICE@green
#   SYSTEMCTL=systemctl          starts and stops the slots
#   BLUE_PORT=8001               loopback ports of the two slots (the app gets PORT)
#   GREEN_PORT=8002
#   HEALTH_URL=http://127.0.0.1:8000/health   through nginx: confirms the switch and the no-op
#   HEALTH_PATH=/health          probed on each slot's own port for the gate
#   HEALTH_TIMEOUT=60            seconds allowed for the gate, and again for the confirmation
#   HEALTH_PASSES=3              consecutive good answers required
#   HEALTH_INTERVAL=1            seconds between probes
#   DRAIN_TIMEOUT=30             seconds the old slot may finish its requests before it is stopped
#   KEEP_RELEASES=5              releases kept on disk (live, previous and running never pruned)
#   ARTIFACT_BUCKET=             s3 bucket holding <prefix>/<sha>.tar.gz
#   ARTIFACT_PREFIX=releases
#   INSTALL_COMMAND=             run inside the new release before it starts, as APP_USER,
#   INSTALL_TIMEOUT=600          with a clean environment, killed (with all it started) after this many seconds
#   PARAMETER_PATH=              Parameter Store path: each release's env file
#   DEPLOY_LOG=/var/log/devprod/deploys.log   one line per run; its directory must be root's alone
#   LOCK_WAIT=0                  seconds to wait for another deploy to finish
#   UNIT_DIR=                    where the slots' systemd drop-ins go (empty: none), carrying
#   APP_START_COMMAND=           the start command and each slot's port
#   AWS_CLI=aws
# The proxy (nginx from the OS packages):
#   NGINX_BIN=nginx              binary used for `nginx -t` (not NGINX: nginx reads that
#                                variable as inherited listening sockets)
#   NGINX_CONF=/etc/nginx/nginx.conf          main configuration, tested with -t
#   NGINX_PID_FILE=/run/nginx.pid             the master's pid: liveness, and whose old workers to drain
#   NGINX_RELOAD="systemctl reload nginx"     reload command (split on spaces, no quoting)
#   NGINX_SITE=/etc/nginx/conf.d/devprod.conf the server block this script writes (must be
#                                             included inside http {}, as conf.d/*.conf is)
#   NGINX_UPSTREAM=/etc/nginx/devprod/upstream.conf   the upstream block, replaced at each switch
#   PROXY_LISTEN="8000 [::]:8000"             nginx `listen` values, space-separated
#   MAX_BODY_MB=10               client_max_body_size, in megabytes
#   PROXY_TIMEOUT=60             seconds nginx waits for the app to read or answer
#   ACCESS_LOG=/var/log/nginx/devprod-access.log
#
# Against a local nginx (what the tests do): start nginx as root with a
# configuration of your own whose http {} includes a directory, e.g.
#   nginx -c /tmp/h/nginx.conf      (pid /tmp/h/nginx.pid; http { include /tmp/h/conf.d/*.conf; })
# then run this script with NGINX_CONF=/tmp/h/nginx.conf NGINX_PID_FILE=/tmp/h/nginx.pid
# NGINX_RELOAD="nginx -c /tmp/h/nginx.conf -s reload" NGINX_SITE=/tmp/h/conf.d/devprod.conf
# NGINX_UPSTREAM=/tmp/h/upstream.conf PROXY_LISTEN=127.0.0.1:18000 ACCESS_LOG=/tmp/h/access.log
# BLUE_PORT=18001 GREEN_PORT=18002 HEALTH_URL=http://127.0.0.1:18000/health, and a SYSTEMCTL
# that starts and stops SERVICE@<slot> (tests/fixtures/bin/systemctl is one).
#
# Runs as root; needs python3, GNU tar, curl, flock, setpriv, unshare, timeout,
# pgrep (util-linux, coreutils, procps: all on AL2023 and Ubuntu 24.04).
#
# Host layout. Root owns everything but shared/data, so the running app cannot
# change any release, current, its env, the proxy configuration or the deploy state:
#   APP_DIR/                  root 0755
#   APP_DIR/releases/<sha>/   root:APP_USER, no group/world write, no setuid/setgid; the
#                             release is APP_USER's only while its install step runs
#   APP_DIR/current           symlink to the live release, replaced by rename
#   APP_DIR/slots/<slot>/     root 0755: release -> ../../releases/<sha> (the slot's working
#                             directory), env (root:APP_USER 0640, the slot's EnvironmentFile)
#   APP_DIR/shared/           root 0755
#   APP_DIR/shared/data/      APP_USER 0750: the app's writable data; root never writes inside
#   APP_DIR/.deploy/          root 0700: lock, state (live slot, release, previous), env/<sha>
#                             (the env each release was verified with), downloads, temporary files
#
# Exit codes:
#   0   success (or the live release redeployed and healthy)
#   10  failed after the switch (not confirmed through the proxy); switched back to the
#       previous slot, which is serving
#   11  failed before the switch; nothing changed for clients (download, checksum, an archive
#       refused, install step failed or timed out, a parameter refused, the health gate on the
#       new slot failed, nginx not running, `nginx -t` or the reload failed)
#   12  another deploy holds the lock
#   13  bad input or settings (not root, APP_USER missing or root, DEPLOY_LOG's directory
#       writable by others, a malformed setting)
#   14  failed, and no verified release is serving (a first deploy failed, or switching back did)
#   15  the live release was redeployed (no-op) but is not healthy
#   16  unexpected error (a bug or a broken host); the last verified release is left serving
#   17  terminated by a signal; the last verified release is left serving
# Only runs refused before the deploy log is known to be safe (not root, a bad
# DEPLOY_LOG) leave no line in it.
set -Eeuo pipefail
# What root creates here must never be group/world-writable, whatever umask the caller left.
umask 0022

readonly EXIT_ROLLED_BACK=10 EXIT_BEFORE_SWITCH=11 EXIT_BUSY=12 EXIT_BAD_INPUT=13 EXIT_NO_ROLLBACK=14
readonly EXIT_UNHEALTHY=15 EXIT_UNEXPECTED=16 EXIT_TERMINATED=17

ACTION="${ACTION:-deploy}"
RELEASE="${RELEASE:-}"
CHECKSUM="${CHECKSUM:-}"
APP_DIR="${APP_DIR:-/srv/app}"
APP_USER="${APP_USER:-app}"
SERVICE="${SERVICE:-devprod-app}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
BLUE_PORT="${BLUE_PORT:-8001}"
GREEN_PORT="${GREEN_PORT:-8002}"
HEALTH_URL="${HEALTH_URL:-http://127.0.0.1:8000/health}"
HEALTH_PATH="${HEALTH_PATH:-/health}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-60}"
HEALTH_PASSES="${HEALTH_PASSES:-3}"
HEALTH_INTERVAL="${HEALTH_INTERVAL:-1}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-30}"
KEEP_RELEASES="${KEEP_RELEASES:-5}"
ARTIFACT_BUCKET="${ARTIFACT_BUCKET:-}"
ARTIFACT_PREFIX="${ARTIFACT_PREFIX:-releases}"
INSTALL_COMMAND="${INSTALL_COMMAND:-}"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-600}"
PARAMETER_PATH="${PARAMETER_PATH:-}"
DEPLOY_LOG="${DEPLOY_LOG:-/var/log/devprod/deploys.log}"
LOCK_WAIT="${LOCK_WAIT:-0}"
UNIT_DIR="${UNIT_DIR:-}"
APP_START_COMMAND="${APP_START_COMMAND:-}"
AWS_CLI="${AWS_CLI:-aws}"
NGINX_BIN="${NGINX_BIN:-nginx}"
# nginx takes a variable named NGINX for sockets handed over by a binary upgrade.
unset NGINX
NGINX_CONF="${NGINX_CONF:-/etc/nginx/nginx.conf}"
NGINX_PID_FILE="${NGINX_PID_FILE:-/run/nginx.pid}"
NGINX_RELOAD="${NGINX_RELOAD:-systemctl reload nginx}"
NGINX_SITE="${NGINX_SITE:-/etc/nginx/conf.d/devprod.conf}"
NGINX_UPSTREAM="${NGINX_UPSTREAM:-/etc/nginx/devprod/upstream.conf}"
PROXY_LISTEN="${PROXY_LISTEN:-8000 [::]:8000}"
MAX_BODY_MB="${MAX_BODY_MB:-10}"
PROXY_TIMEOUT="${PROXY_TIMEOUT:-60}"
ACCESS_LOG="${ACCESS_LOG:-/var/log/nginx/devprod-access.log}"

RELEASES="${APP_DIR}/releases"
CURRENT="${APP_DIR}/current"
SLOTS="${APP_DIR}/slots"
SHARED="${APP_DIR}/shared"
DATA_DIR="${SHARED}/data"
STATE_DIR="${APP_DIR}/.deploy"
STATE_FILE="${STATE_DIR}/state"
ENV_STORE="${STATE_DIR}/env"
LOCK_FILE="${STATE_DIR}/lock"
INCOMING="${STATE_DIR}/incoming"
# The install step gets this PATH and nothing else of root's environment.
INSTALL_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Parameter names the unit sets itself: a parameter may not replace them.
RESERVED_NAMES="PORT DATA_DIR"
APP_UID=""
APP_GID=""

# What this run has done so far, for the exit paths (finish, the signal and error traps).
LOG_READY=no          # DEPLOY_LOG checked: lines may be written to it
RECORDED=no           # this run's one line is written
LOCKED=no             # this run holds the deploy lock
PHASE=none            # none | started (new slot up, no traffic) | switched (nginx may route to it) | committed
LIVE_SLOT=""          # from the state file: the slot serving, its release, the release before it
LIVE_RELEASE=""
PREVIOUS=""
NEW_SLOT=""
INSTALL_PID=""
RECOVERED=no          # this run found nginx off the live slot (an interrupted run) and put it back

log() { printf '%s deploy[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*" >&2; }

# D8, D11: one line per run in the deploy log: when, action, release, result,
# and what serves afterwards. Input that failed validation is not copied into it.
record() {
  [[ "${LOG_READY}" == yes && "${RECORDED}" == no ]] || return 0
  RECORDED=yes
  local action="${ACTION}" release="${RELEASE:-none}"
  [[ "${action}" =~ ^(deploy|rollback)$ ]] || action=invalid
  [[ "${release}" == none || "${release}" =~ ^[0-9a-f]{7,40}$ ]] || release=invalid
  printf '%s action=%s release=%s result=%s live=%s slot=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${action}" "${release}" "$1" "${LIVE_RELEASE:-none}" "${LIVE_SLOT:-none}" >>"${DEPLOY_LOG}"
}

finish() {
  local code="$1" result="$2"
  trap - ERR
  # Temporary files may hold parameter values; only the run holding the lock may touch them.
  if [[ "${LOCKED}" == yes ]]; then rm -f "${STATE_DIR}"/tmp.*; fi
  record "${result}"
  log "${result} (exit ${code}); serving: ${LIVE_RELEASE:-nothing}${LIVE_SLOT:+ in slot ${LIVE_SLOT}}"
  exit "${code}"
}

bad_input() { log "$*"; finish "${EXIT_BAD_INPUT}" bad-input; }

# Checks that need nothing but the settings; failures are logged once DEPLOY_LOG is known to be safe.
validate_settings() {
  [[ "${ACTION}" == deploy || "${ACTION}" == rollback ]] || bad_input "ACTION must be deploy or rollback, got '${ACTION}'"
  if [[ -n "${RELEASE}" && ! "${RELEASE}" =~ ^[0-9a-f]{7,40}$ ]]; then
    bad_input "RELEASE must be a git sha (7-40 lowercase hex), got '${RELEASE}'"
  fi
  if [[ "${ACTION}" == deploy && -z "${RELEASE}" ]]; then
    bad_input "deploy needs RELEASE"
  fi
  # D18: hex case does not matter; anything but 64 hex digits is refused.
  [[ -z "${CHECKSUM}" || "${CHECKSUM}" =~ ^[0-9a-fA-F]{64}$ ]] || bad_input "CHECKSUM must be a sha256 (64 hex digits), got '${CHECKSUM}'"
  CHECKSUM="${CHECKSUM,,}"
  local name
  for name in HEALTH_TIMEOUT HEALTH_PASSES KEEP_RELEASES LOCK_WAIT INSTALL_TIMEOUT DRAIN_TIMEOUT MAX_BODY_MB PROXY_TIMEOUT; do
    [[ "${!name}" =~ ^[0-9]{1,6}$ ]] || bad_input "${name} must be a whole number, got '${!name}'"
  done
  [[ "${HEALTH_INTERVAL}" =~ ^[0-9]{1,3}(\.[0-9]{1,3})?$ ]] || bad_input "HEALTH_INTERVAL must be seconds, got '${HEALTH_INTERVAL}'"
  (( KEEP_RELEASES >= 2 )) || bad_input "KEEP_RELEASES must be at least 2"
  (( INSTALL_TIMEOUT >= 1 )) || bad_input "INSTALL_TIMEOUT must be at least 1 second"
  (( HEALTH_PASSES >= 1 )) || bad_input "HEALTH_PASSES must be at least 1"
  (( MAX_BODY_MB >= 1 && PROXY_TIMEOUT >= 1 )) || bad_input "MAX_BODY_MB and PROXY_TIMEOUT must be at least 1"
  for name in BLUE_PORT GREEN_PORT; do
    if [[ ! "${!name}" =~ ^[1-9][0-9]{1,4}$ ]] || (( ${!name} > 65535 )); then bad_input "${name} must be a port, got '${!name}'"; fi
  done
  [[ "${BLUE_PORT}" != "${GREEN_PORT}" ]] || bad_input "BLUE_PORT and GREEN_PORT must differ"
  local listen
  for listen in ${PROXY_LISTEN}; do
    [[ "${listen}" =~ ^(\[[0-9a-fA-F:]+\]:|[0-9.]+:)?[1-9][0-9]{1,4}$ ]] || bad_input "PROXY_LISTEN: '${listen}' is not [address:]port"
    [[ "${listen##*:}" != "${BLUE_PORT}" && "${listen##*:}" != "${GREEN_PORT}" ]] || bad_input "PROXY_LISTEN ${listen} takes a slot's port"
  done
  [[ -n "${PROXY_LISTEN// /}" ]] || bad_input "PROXY_LISTEN is empty"
  [[ "${HEALTH_URL}" =~ ^http://[^[:space:]]+$ ]] || bad_input "HEALTH_URL must be an http:// URL, got '${HEALTH_URL}'"
  [[ "${HEALTH_PATH}" =~ ^/[A-Za-z0-9._~/-]*$ ]] || bad_input "HEALTH_PATH must be a URL path, got '${HEALTH_PATH}'"
  [[ "${SERVICE}" =~ ^[A-Za-z0-9_.-]+$ ]] || bad_input "SERVICE must be a unit name without @, got '${SERVICE}'"
  for name in NGINX_SITE NGINX_UPSTREAM ACCESS_LOG NGINX_CONF NGINX_PID_FILE; do
    [[ "${!name}" =~ ^/[A-Za-z0-9._/-]+$ ]] || bad_input "${name} must be an absolute path of [A-Za-z0-9._/-], got '${!name}'"
  done
  if [[ -n "${UNIT_DIR}" ]]; then
    [[ "${UNIT_DIR}" == /* ]] || bad_input "UNIT_DIR must be an absolute path"
    # The command goes inside single quotes in ExecStart=, where systemd still
    # unescapes backslashes: refuse what could end the quotes or be unescaped.
    [[ -n "${APP_START_COMMAND}" && "${APP_START_COMMAND}" != *[\'\\]* && "${APP_START_COMMAND}" != *$'\n'* ]] ||
      bad_input "UNIT_DIR needs a one-line APP_START_COMMAND without single quotes or backslashes"
  fi
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
# could write it or its directory, it could forge lines or swap the file. Until
# it passes, nothing is written to it (those runs say why on stderr only).
prepare_log() {
  (( EUID == 0 )) || { log "deploy.sh runs as root (it owns the releases and hands the install step to APP_USER)"; exit "${EXIT_BAD_INPUT}"; }
  [[ "${DEPLOY_LOG}" == /* ]] || { log "DEPLOY_LOG must be an absolute path, got '${DEPLOY_LOG}'"; exit "${EXIT_BAD_INPUT}"; }
  local dir
  dir="$(dirname "${DEPLOY_LOG}")"
  [[ -d "${dir}" ]] || install -d -m 0755 -o 0 -g 0 "${dir}"
  root_only_dir "${dir}" || { log "DEPLOY_LOG's directory ${dir} must be root's and not group/world-writable"; exit "${EXIT_BAD_INPUT}"; }
  [[ ! -L "${DEPLOY_LOG}" ]] || { log "DEPLOY_LOG ${DEPLOY_LOG} is a symbolic link"; exit "${EXIT_BAD_INPUT}"; }
  LOG_READY=yes
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
    finish "${EXIT_BUSY}" busy
  fi
  LOCKED=yes
}

# The layout in the header, also on hosts set up when the app user owned
# shared/: that directory is taken back first, so nothing checked after it can
# be changed by a link or file the app plants meanwhile.
prepare_layout() {
  install -d -m 0755 -o 0 -g 0 "${RELEASES}" "${SHARED}" "${SLOTS}" "${SLOTS}/blue" "${SLOTS}/green"
  install -d -m 0700 -o 0 -g 0 "${ENV_STORE}"
  rm -rf "${SHARED}/.env.tmp" "${SHARED}/env"  # the old shared env file (each slot has its own now)
  if [[ -L "${DATA_DIR}" || ( -e "${DATA_DIR}" && ! -d "${DATA_DIR}" ) ]]; then
    log "removing ${DATA_DIR}: not a directory"
    rm -f "${DATA_DIR}"
  fi
  [[ -d "${DATA_DIR}" ]] || install -d -m 0750 -o "${APP_UID}" -g "${APP_GID}" "${DATA_DIR}"
}

# Leftovers of a run that was killed: never complete, never live.
clean_leftovers() {
  rm -rf "${INCOMING}" "${APP_DIR}/.incoming" "${RELEASES}"/*.partial "${RELEASES}"/*.home \
    "${APP_DIR}"/current.tmp.* "${STATE_DIR}"/tmp.* "${STATE_DIR}"/complete.* "${ENV_STORE}"/*.tmp \
    "${SLOTS}"/*/.devprod.* "${SLOTS}"/*/release.tmp "$(dirname "${NGINX_SITE}")"/.devprod.* "$(dirname "${NGINX_UPSTREAM}")"/.devprod.*
}

other_slot() { if [[ "$1" == blue ]]; then echo green; else echo blue; fi; }
slot_port() { if [[ "$1" == blue ]]; then echo "${BLUE_PORT}"; else echo "${GREEN_PORT}"; fi; }

# A temporary file in root's own directory; renamed into place by the caller (D10).
state_tmp() { mktemp "${STATE_DIR}/tmp.XXXXXX"; }

# Replace the file $2 by the content on stdin, with owner $3 and mode $4, by rename.
put_file() {
  local tmp dest="$1" owner="$2" mode="$3"
  tmp="$(mktemp "$(dirname "${dest}")/.devprod.XXXXXX")" || return 1
  if cat >"${tmp}" && chown "${owner}" "${tmp}" && chmod "${mode}" "${tmp}" && mv -T -f "${tmp}" "${dest}"; then
    return 0
  fi
  rm -f "${tmp}"
  return 1
}

# ------------------------------------------------------------------ state (D13)

# The state file holds "slot release previous": who serves, and where a
# rollback goes. It is written only once a switch is confirmed, by rename.
load_state() {
  LIVE_SLOT="" LIVE_RELEASE="" PREVIOUS=""
  [[ -f "${STATE_FILE}" ]] || return 0
  local slot release previous
  read -r slot release previous <"${STATE_FILE}" || true
  if [[ "${slot}" =~ ^(blue|green)$ && "${release}" =~ ^[0-9a-f]{7,40}$ && ( "${previous:--}" == - || "${previous}" =~ ^[0-9a-f]{7,40}$ ) ]]; then
    LIVE_SLOT="${slot}" LIVE_RELEASE="${release}" PREVIOUS="${previous#-}"
  else
    log "ignoring a malformed ${STATE_FILE}"
  fi
}

save_state() {
  local slot="$1" release="$2" previous="$3"
  printf '%s %s %s\n' "${slot}" "${release}" "${previous:--}" | put_file "${STATE_FILE}" 0:0 0600
  LIVE_SLOT="${slot}" LIVE_RELEASE="${release}" PREVIOUS="${previous}"
  point_current "${release}"
}

# D2: the live link is only ever replaced by rename, never removed.
point_current() {
  local sha="$1" tmp="${APP_DIR}/current.tmp.$$"
  [[ "$(readlink "${CURRENT}" 2>/dev/null || true)" == "releases/${sha}" ]] && return 0
  ln -sfn "releases/${sha}" "${tmp}"
  mv -T "${tmp}" "${CURRENT}"
  log "current -> releases/${sha}"
}

# ------------------------------------------------------------------ the release (D6, D9, D18)

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

# D6, S26: a failed download, a missing checksum or a mismatch fails before
# the switch. The expected digest is the CHECKSUM parameter only. Each run
# downloads into a fresh directory, so a download left running by a killed
# run can never rename its file over this run's.
download_release() {
  local sha="$1" incoming="$2"
  if [[ -z "${CHECKSUM}" ]]; then
    log "release ${sha} is not on this host and no CHECKSUM was given (the digest published with it)"
    return 1
  fi
  log "downloading s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz"
  "${AWS_CLI}" s3 cp --only-show-errors "s3://${ARTIFACT_BUCKET}/${ARTIFACT_PREFIX}/${sha}.tar.gz" "${incoming}/release.tar.gz" </dev/null ||
    { log "download failed"; return 1; }
  local actual
  actual="$(sha256sum "${incoming}/release.tar.gz" | awk '{print $1}')" || return 1
  if [[ "${actual}" != "${CHECKSUM}" ]]; then
    log "checksum mismatch: expected ${CHECKSUM}, got ${actual}"; return 1
  fi
}

# D9: unpacked inside the root-only state directory, so the app user cannot
# see or touch a file before the checks and the mode pass are done.
unpack_release() {
  local sha="$1" incoming="$2" archive="$2/release.tar.gz" tree="$2/tree"
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
# APP_USER, no capabilities, no root environment, no stdin (under SSM, stdin
# is the rest of this script). In its own PID namespace, whose end kills
# everything it started, daemons and setsid() included: so the timeout is
# real and nothing it left can write the release after it. It runs in the
# background so that a SIGTERM is handled at once, not after the install.
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
  ) </dev/null &
  INSTALL_PID=$!
  wait "${INSTALL_PID}" || status=$?
  INSTALL_PID=""
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
  local sha="$1" incoming="$2" partial="${RELEASES}/$1.partial" marker
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
  rm -rf "${incoming}"
}

# Runs as the left side of `||`, where bash ignores set -e: every step
# checks its own commands and returns 1 on the first failure.
fetch_release() {
  local sha="$1" incoming
  if [[ -f "${RELEASES}/${sha}/.devprod-complete" ]]; then
    log "release ${sha} already on disk"
    return 0
  fi
  rm -rf "${RELEASES:?}/${sha}"
  [[ -n "${ARTIFACT_BUCKET}" ]] || { log "ARTIFACT_BUCKET is not set"; return 1; }
  install -d -m 0700 -o 0 -g 0 "${INCOMING}" || return 1
  incoming="$(mktemp -d "${INCOMING}/${sha}.XXXXXX")" || return 1
  download_release "${sha}" "${incoming}" && unpack_release "${sha}" "${incoming}" &&
    install_release "${sha}" && seal_release "${sha}" "${incoming}"
}

# ------------------------------------------------------------------ the env (D15, D16)

# D15: Parameter Store values reach the app exactly: each is written in
# double quotes with \ " ` $ escaped, which systemd's EnvironmentFile= reads
# back byte for byte (newlines, tabs, quotes, edge spaces included). Names
# must be variable names, may not take one the unit sets, and two paths may
# not end in the same name. Prints the env file on stdout, sorted (so two reads
# of the same parameters compare equal); a refusal says why on stderr.
render_env() {
  python3 -I -c '
import json, re, sys
reserved = set(sys.argv[1].split())
problems, names = [], {}
for p in json.load(sys.stdin).get("Parameters", []):
    path, value = p["Name"], p["Value"]
    name = path.rsplit("/", 1)[-1]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        problems.append(f"{path}: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
    elif name in reserved:
        problems.append(f"{path}: {name} is set by the unit and cannot be a parameter")
    elif name in names:
        problems.append(f"{path} and {names[name][0]} both become {name}")
    else:
        names[name] = (path, value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{path}: the value is not valid UTF-8")
    if "\0" in value:
        problems.append(f"{path}: the value holds a NUL byte, which no environment can carry")
for problem in problems:
    print(f"refused: parameter {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
for name in sorted(names):
    value = names[name][1]
    for char in "\\\"`$":
        value = value.replace(char, "\\" + char)
    sys.stdout.write(f"{name}=\"{value}\"\n")
' "${RESERVED_NAMES}"
}

# The env a new deploy starts with, from Parameter Store, into a root-only temporary file.
read_parameters() {
  local out="$1" json
  [[ -n "${PARAMETER_PATH}" ]] || { : >"${out}"; return 0; }
  log "reading parameters under ${PARAMETER_PATH}"
  json="$(state_tmp)" || return 1
  if ! "${AWS_CLI}" ssm get-parameters-by-path --path "${PARAMETER_PATH}" --recursive --with-decryption \
       --output json </dev/null >"${json}"; then
    log "reading Parameter Store failed"; rm -f "${json}"; return 1
  fi
  render_env <"${json}" >"${out}" || { log "parameters refused; nothing was changed"; rm -f "${json}"; return 1; }
  rm -f "${json}"
}

# ------------------------------------------------------------------ slots

# The unit's start command and each slot's port follow the stack config:
# rewritten (by rename) only when they changed, then systemd reloads its units.
# D19: systemd expands % specifiers and $ variables in ExecStart=; doubled, they are literal.
write_unit_settings() {
  [[ -n "${UNIT_DIR}" ]] || return 0
  local slot file wanted command changed=no
  command="${APP_START_COMMAND//%/%%}"
  command="${command//\$/\$\$}"
  for slot in blue green; do
    file="${UNIT_DIR}/${SERVICE}@${slot}.service.d/50-devprod.conf"
    wanted="$(printf '[Service]\nEnvironment=PORT=%s\nExecStart=\nExecStart=/bin/bash -c '"'"'%s'"'"'\n' "$(slot_port "${slot}")" "${command}")"
    [[ -f "${file}" && "$(cat "${file}")" == "${wanted}" ]] && continue
    log "writing ${file}"
    install -d -m 0755 -o 0 -g 0 "$(dirname "${file}")" || return 1
    printf '%s\n' "${wanted}" | put_file "${file}" 0:0 0644 || return 1
    changed=yes
  done
  if [[ "${changed}" == yes ]]; then "${SYSTEMCTL}" daemon-reload </dev/null || return 1; fi
}

stop_slot() {
  log "stopping ${SERVICE}@$1"
  "${SYSTEMCTL}" stop "${SERVICE}@$1" </dev/null || { log "could not stop ${SERVICE}@$1"; return 1; }
}

# Nothing may answer on a slot's port before its release starts: the gate
# would take it for the new release.
port_free() {
  local status=0
  curl -sS -o /dev/null --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null </dev/null || status=$?
  (( status == 7 ))
}

# The slot's release link, its env file (root:APP_USER 0640, read by systemd), then start.
start_slot() {
  local slot="$1" sha="$2" env="$3"
  write_unit_settings || { log "could not write the slots' unit settings"; return 1; }
  port_free "$(slot_port "${slot}")" || { log "port $(slot_port "${slot}") of slot ${slot} is taken by something else"; return 1; }
  local tmp="${SLOTS}/${slot}/release.tmp"
  ln -sfn "../../releases/${sha}" "${tmp}" && mv -T "${tmp}" "${SLOTS}/${slot}/release" || return 1
  put_file "${SLOTS}/${slot}/env" "0:${APP_GID}" 0640 <"${env}" || return 1
  log "starting ${sha} in ${SERVICE}@${slot} (port $(slot_port "${slot}"))"
  PHASE=started NEW_SLOT="${slot}"
  "${SYSTEMCTL}" start "${SERVICE}@${slot}" </dev/null || { log "${SERVICE}@${slot} did not start"; return 1; }
}

# ------------------------------------------------------------------ health (D3, D14)

# One probe: a 2xx answer (redirects are not followed), and when the body
# names a release ("release": "<sha>"), it must be the expected one.
answers() {
  local url="$1" want="$2" out code body
  out="$(curl -sS --max-time 2 -w '\n%{http_code}' "${url}" 2>/dev/null </dev/null)" || return 1
  code="${out##*$'\n'}" body="${out%$'\n'*}"
  [[ "${code}" =~ ^2[0-9][0-9]$ ]] || return 1
  if [[ "${body}" =~ \"release\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]]; then
    [[ "${BASH_REMATCH[1]}" == "${want}" ]] || return 1
  fi
}

# D3: HEALTH_PASSES good answers in a row before the deadline.
healthy() {
  local url="$1" want="$2" deadline=$(( SECONDS + HEALTH_TIMEOUT )) passes=0
  while (( SECONDS < deadline )); do
    if answers "${url}" "${want}"; then
      passes=$(( passes + 1 ))
      (( passes >= HEALTH_PASSES )) && return 0
    else
      passes=0
    fi
    sleep "${HEALTH_INTERVAL}"
  done
  log "${want} not healthy within ${HEALTH_TIMEOUT}s at ${url}"
  return 1
}

# ------------------------------------------------------------------ the proxy

nginx_master() {
  local pid
  pid="$(cat "${NGINX_PID_FILE}" 2>/dev/null)" || return 1
  [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null || return 1
  # A stale pid file may name an unrelated process.
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q '^nginx: master process' || return 1
  echo "${pid}"
}

require_nginx() {
  nginx_master >/dev/null || { log "nginx is not running (no master in ${NGINX_PID_FILE}): nothing was switched"; return 1; }
}

site_config() {
  local listen
  printf '# Written by scripts/deploy.sh: replaced by rename, checked by nginx -t before each reload.\n'
  # Which slot served each request, and how long it took: the record of a switch.
  printf 'log_format devprod_proxy %s;\n' "'\$remote_addr [\$time_iso8601] \"\$request\" \$status \$body_bytes_sent \$request_time upstream=\$upstream_addr \$upstream_status \"\$http_user_agent\"'"
  printf 'server {\n'
  for listen in ${PROXY_LISTEN}; do printf '    listen %s;\n' "${listen}"; done
  cat <<NGINX
    server_tokens off;
    client_max_body_size ${MAX_BODY_MB}m;
    proxy_connect_timeout 5s;
    proxy_send_timeout ${PROXY_TIMEOUT}s;
    proxy_read_timeout ${PROXY_TIMEOUT}s;
    access_log ${ACCESS_LOG} devprod_proxy;
    add_header X-Devprod-Slot \$devprod_slot always;
    add_header X-Devprod-Release \$devprod_release always;

    location / {
        proxy_pass http://devprod_app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        # nginx is the edge: what the client sent in these headers is replaced, not trusted.
        proxy_set_header X-Forwarded-For \$remote_addr;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Real-IP \$remote_addr;
    }
}
include ${NGINX_UPSTREAM};
NGINX
}

# The upstream, and what every answer tells operators (`devprod health`): which slot and release nginx routes to.
upstream_config() {
  local slot="$1" sha="$2"
  printf '# slot=%s release=%s (written by scripts/deploy.sh)\n' "${slot}" "${sha}"
  printf 'upstream devprod_app {\n    server 127.0.0.1:%s;\n    keepalive 16;\n}\n' "$(slot_port "${slot}")"
  # shellcheck disable=SC2016 # nginx variables, not shell ones
  printf 'map $host $devprod_slot { default %s; }\nmap $host $devprod_release { default %s; }\n' "${slot}" "${sha}"
}

# The old worker processes of nginx's master: they may still hold requests for the old slot.
nginx_workers() {
  local master
  master="$(nginx_master)" || return 0
  pgrep -P "${master}" </dev/null | tr '\n' ' ' || true
}

# Workers of an older configuration, still finishing what they accepted before a reload.
nginx_workers_shutting_down() {
  local master
  master="$(nginx_master)" || return 0
  pgrep -P "${master}" -f 'shutting down' </dev/null | tr '\n' ' ' || true
}

# Point nginx at a slot: both files by rename, `nginx -t`, reload. On any
# failure the previous files are put back and nginx is left on them.
route_to() {
  local slot="$1" sha="$2" saved_site saved_upstream status=0
  saved_site="$(state_tmp)" saved_upstream="$(state_tmp)"
  cp -a "${NGINX_SITE}" "${saved_site}" 2>/dev/null || rm -f "${saved_site}"
  cp -a "${NGINX_UPSTREAM}" "${saved_upstream}" 2>/dev/null || rm -f "${saved_upstream}"
  install -d -m 0755 -o 0 -g 0 "$(dirname "${NGINX_SITE}")" "$(dirname "${NGINX_UPSTREAM}")" &&
    site_config | put_file "${NGINX_SITE}" 0:0 0644 &&
    upstream_config "${slot}" "${sha}" | put_file "${NGINX_UPSTREAM}" 0:0 0644 || status=1
  if (( status == 0 )) && ! "${NGINX_BIN}" -t -q -c "${NGINX_CONF}" </dev/null; then
    log "nginx -t refused the configuration"; status=1
  fi
  if (( status == 0 )); then
    log "nginx -> ${SERVICE}@${slot} (port $(slot_port "${slot}"), ${sha})"
    # shellcheck disable=SC2086 # NGINX_RELOAD is a command line, split on spaces as documented
    ${NGINX_RELOAD} </dev/null && return 0
    log "nginx reload failed (${NGINX_RELOAD})"; status=1
  fi
  if [[ -f "${saved_site}" ]]; then mv -T -f "${saved_site}" "${NGINX_SITE}"; else rm -f "${NGINX_SITE}"; fi
  if [[ -f "${saved_upstream}" ]]; then mv -T -f "${saved_upstream}" "${NGINX_UPSTREAM}"; else rm -f "${NGINX_UPSTREAM}"; fi
  rm -f "${saved_site}" "${saved_upstream}"
  return "${status}"
}

# In-flight requests finish on the old slot: nginx's old workers serve what
# they accepted and exit; until they have, the old slot keeps running (at most DRAIN_TIMEOUT).
drain() {
  local workers="$1" deadline=$(( SECONDS + DRAIN_TIMEOUT )) pid busy
  while :; do
    busy=""
    for pid in ${workers}; do
      if kill -0 "${pid}" 2>/dev/null; then busy+="${pid} "; fi
    done
    [[ -z "${busy}" ]] && return 0
    if (( SECONDS >= deadline )); then
      log "drain timeout after ${DRAIN_TIMEOUT}s: old nginx workers ${busy}still busy"
      return 0
    fi
    sleep 0.1
  done
}

routes_to() { grep -q "^# slot=$1 release=$2 " "${NGINX_UPSTREAM}" 2>/dev/null; }

# Every run first returns the host to its state file: nginx on the live slot,
# current on its release, the other slot stopped. This is what recovers a
# run that was killed between the switch and the old slot's stop.
reconcile() {
  load_state
  local idle
  if [[ -n "${LIVE_SLOT}" ]]; then
    point_current "${LIVE_RELEASE}"
    if ! routes_to "${LIVE_SLOT}" "${LIVE_RELEASE}"; then
      log "nginx does not route to the live slot ${LIVE_SLOT} (an interrupted run): routing it back"
      require_nginx || return 1
      local workers
      workers="$(nginx_workers)"
      route_to "${LIVE_SLOT}" "${LIVE_RELEASE}" || return 1
      RECOVERED=yes
      drain "${workers}"
    fi
    idle="$(other_slot "${LIVE_SLOT}")"
    # An interrupted run may have left nginx workers finishing requests on the idle slot.
    drain "$(nginx_workers_shutting_down)"
    stop_slot "${idle}" || return 1
  else
    stop_slot blue && stop_slot green || return 1
  fi
}

# ------------------------------------------------------------------ retention (D5, D19)

# Keep the newest KEEP_RELEASES by completion time, failed ones included;
# never the live one or the previous one (the idle slot is stopped by then).
prune() {
  local count=0 dir name keep
  keep=" ${LIVE_RELEASE} ${PREVIOUS} "
  while IFS= read -r dir; do
    name="$(basename "${dir}")"
    count=$(( count + 1 ))
    if (( count > KEEP_RELEASES )) && [[ "${keep}" != *" ${name} "* ]]; then
      log "pruning ${name}"
      rm -rf "${dir}" "${ENV_STORE:?}/${name}"
    fi
  done < <(find "${RELEASES}" -mindepth 2 -maxdepth 2 -name .devprod-complete -printf '%T@ %h\n' | sort -rn | cut -d' ' -f2-)
  # Stored envs of releases that are gone.
  for dir in "${ENV_STORE}"/*; do
    [[ -e "${dir}" && ! -d "${RELEASES}/$(basename "${dir}")" ]] && rm -f "${dir}"
  done
  return 0
}

# ------------------------------------------------------------------ the switch

# Start $1 in the idle slot with the env file $2, gate it, switch nginx,
# confirm, commit, drain and stop the old slot. Every failure before the
# commit leaves the old slot serving and stops the new one.
roll_to() {
  local sha="$1" env="$2" slot old_slot="${LIVE_SLOT}" old_release="${LIVE_RELEASE}" workers
  slot="$(other_slot "${LIVE_SLOT:-green}")"
  require_nginx || fail_before_switch failed-nginx-down
  start_slot "${slot}" "${sha}" "${env}" || fail_before_switch failed-before-switch
  # D14: gated on the slot's own port, so only this release can answer.
  healthy "http://127.0.0.1:$(slot_port "${slot}")${HEALTH_PATH}" "${sha}" || fail_before_switch failed-health-gate
  workers="$(nginx_workers)"
  # Switched from before the reload on: a signal during it must put nginx back.
  PHASE=switched
  if ! route_to "${slot}" "${sha}"; then
    # The files are back and nginx was not reloaded with them: no request reached the new slot.
    PHASE=started
    fail_before_switch failed-proxy-switch
  fi
  if ! healthy "${HEALTH_URL}" "${sha}"; then
    log "${sha} answers on its slot but not through nginx"
    switch_back
    finish "${EXIT_ROLLED_BACK}" "failed-rolled-back-to-${old_release}"
  fi
  # D13, D16: the commit. The env is the one it was verified with.
  cp "${env}" "${ENV_STORE}/${sha}.tmp" && mv -T -f "${ENV_STORE}/${sha}.tmp" "${ENV_STORE}/${sha}"
  if [[ -n "${old_release}" && "${old_release}" != "${sha}" ]]; then
    save_state "${slot}" "${sha}" "${old_release}"
  else
    save_state "${slot}" "${sha}" "${PREVIOUS}"
  fi
  PHASE=committed
  touch -h "${RELEASES}/${sha}/.devprod-complete"
  # After a reboot systemd starts the live slot, and only that one.
  "${SYSTEMCTL}" enable --quiet "${SERVICE}@${slot}" </dev/null || log "could not enable ${SERVICE}@${slot} at boot"
  if [[ -n "${old_slot}" && "${old_slot}" != "${slot}" ]]; then
    "${SYSTEMCTL}" disable --quiet "${SERVICE}@${old_slot}" </dev/null || log "could not disable ${SERVICE}@${old_slot} at boot"
  fi
  if [[ -n "${old_slot}" ]]; then
    log "draining ${SERVICE}@${old_slot} (at most ${DRAIN_TIMEOUT}s)"
    drain "${workers}"
    stop_slot "${old_slot}" || log "the old slot is still running; the next deploy stops it"
  fi
  prune
  finish 0 success
}

# The new slot got no traffic (or nginx was put back on the old one): stop it.
fail_before_switch() {
  local result="$1"
  undo
  prune
  if [[ -z "${LIVE_SLOT}" ]]; then
    finish "${EXIT_NO_ROLLBACK}" "${result}"
  fi
  finish "${EXIT_BEFORE_SWITCH}" "${result}"
}

# Back to the state file's slot (still running: it is only stopped after a commit).
switch_back() {
  local workers
  if [[ -z "${LIVE_SLOT}" ]]; then
    [[ -z "${NEW_SLOT}" ]] || stop_slot "${NEW_SLOT}" || true
    PHASE=none
    finish "${EXIT_NO_ROLLBACK}" failed-no-previous-release
  fi
  log "switching back to ${LIVE_RELEASE} in ${SERVICE}@${LIVE_SLOT}"
  workers="$(nginx_workers)"
  if route_to "${LIVE_SLOT}" "${LIVE_RELEASE}" && healthy "${HEALTH_URL}" "${LIVE_RELEASE}"; then
    drain "${workers}"
    stop_slot "${NEW_SLOT}" || true
    PHASE=none
    return 0
  fi
  # The new slot keeps running: nginx may still route to it. The next run routes back to the state's slot.
  PHASE=none
  log "the previous release is not serving through nginx either"
  finish "${EXIT_NO_ROLLBACK}" failed-rollback-unhealthy
}

# What a failure or a signal must undo, by phase: a started slot is stopped;
# a switched proxy goes back to the live slot; a committed switch stands.
undo() {
  case "${PHASE}" in
    started) stop_slot "${NEW_SLOT}" || true ;;
    switched)
      if [[ -n "${LIVE_SLOT}" ]]; then
        local workers
        workers="$(nginx_workers)"
        if route_to "${LIVE_SLOT}" "${LIVE_RELEASE}"; then
          drain "${workers}"
        else
          log "could not route nginx back to ${LIVE_SLOT}; the next run does"
        fi
      fi
      stop_slot "${NEW_SLOT}" || true ;;
  esac
  PHASE=none
}

# D12: TERM, INT or HUP at any point: kill the install step if one runs, undo
# what is not committed, log one line and exit 17.
# shellcheck disable=SC2329 # called by the traps in main
on_signal() {
  # A subshell ($(...), a background step) only ends itself; the main shell records and undoes.
  [[ "${BASHPID}" == "$$" ]] || exit "${EXIT_TERMINATED}"
  trap '' TERM INT HUP
  trap - ERR
  set +e
  log "terminated ($1) while ${PHASE}"
  if [[ -n "${INSTALL_PID}" ]]; then kill -KILL "${INSTALL_PID}" 2>/dev/null; wait "${INSTALL_PID}" 2>/dev/null; fi
  undo
  finish "${EXIT_TERMINATED}" terminated
}

# D11: an unexpected failure is logged (one line), undone like a signal, and exits 16.
# shellcheck disable=SC2329 # called by the trap in main
on_error() {
  local status="$1" line="$2" command="$3"
  [[ "${BASHPID}" == "$$" ]] || exit "${status}"
  trap '' TERM INT HUP
  trap - ERR
  set +e
  log "unexpected error (exit ${status}) at line ${line}: ${command}"
  undo
  finish "${EXIT_UNEXPECTED}" "error-line-${line}"
}

# ------------------------------------------------------------------ main

# D7, D16: the live release again. Its env is read again: unchanged, this is
# a no-op that re-checks health through nginx; changed, the same release is
# rolled through the idle slot with the new env (the running one keeps the
# env it was verified with until then).
redeploy_live() {
  local env="$1"
  if [[ -f "${ENV_STORE}/${LIVE_RELEASE}" ]] && cmp -s "${env}" "${ENV_STORE}/${LIVE_RELEASE}"; then
    healthy "${HEALTH_URL}" "${LIVE_RELEASE}" && finish 0 noop-healthy
    finish "${EXIT_UNHEALTHY}" noop-unhealthy
  fi
  log "the parameters changed: ${LIVE_RELEASE} restarts in the idle slot with them"
  roll_to "${LIVE_RELEASE}" "${env}"
}

rollback() {
  local target="${RELEASE:-${PREVIOUS}}" env
  # D13: after an interrupted deploy, putting the last verified release back is the rollback.
  if [[ -z "${RELEASE}" && "${RECOVERED}" == yes ]]; then
    RELEASE="${LIVE_RELEASE}"
    healthy "${HEALTH_URL}" "${LIVE_RELEASE}" && finish 0 recovered
    finish "${EXIT_UNHEALTHY}" recovered-unhealthy
  fi
  RELEASE="${target}"
  if [[ -z "${target}" || ! -f "${RELEASES}/${target}/.devprod-complete" ]]; then
    log "no release to roll back to (${target:-no previous release recorded})"
    finish "${EXIT_BEFORE_SWITCH}" no-release-to-roll-back-to
  fi
  if [[ "${target}" == "${LIVE_RELEASE}" ]]; then
    healthy "${HEALTH_URL}" "${LIVE_RELEASE}" && finish 0 noop-healthy
    finish "${EXIT_UNHEALTHY}" noop-unhealthy
  fi
  # D16: the env it was verified with (an empty one if none was kept).
  env="$(state_tmp)"
  if [[ -f "${ENV_STORE}/${target}" ]]; then cp "${ENV_STORE}/${target}" "${env}"; else log "no stored env for ${target}: starting it with none"; fi
  roll_to "${target}" "${env}"
}

deploy() {
  local env
  env="$(state_tmp)"
  if [[ "${RELEASE}" != "${LIVE_RELEASE}" ]]; then
    # D6: every failure up to the gate leaves the live slot untouched.
    fetch_release "${RELEASE}" || fail_before_switch failed-before-switch
  fi
  read_parameters "${env}" || fail_before_switch failed-before-switch
  if [[ "${RELEASE}" == "${LIVE_RELEASE}" ]]; then
    redeploy_live "${env}"
  fi
  roll_to "${RELEASE}" "${env}"
}

locked_main() {
  prepare_layout
  clean_leftovers
  reconcile || finish "${EXIT_BEFORE_SWITCH}" failed-recovery
  log "${ACTION} ${RELEASE:-(previous)}; live: ${LIVE_RELEASE:-none}${LIVE_SLOT:+ in ${LIVE_SLOT}}"
  if [[ "${ACTION}" == rollback ]]; then rollback; else deploy; fi
}

main() {
  trap 'on_error "$?" "${LINENO}" "${BASH_COMMAND}"' ERR
  trap 'on_signal TERM' TERM
  trap 'on_signal INT' INT
  trap 'on_signal HUP' HUP
  prepare_log
  validate_settings
  take_lock
  # D17: run with fd 9 closed. bash keeps the lock open on a copy marked
  # close-on-exec while the function runs, so no program started from here
  # on (aws, curl, sleep, systemctl, the install step) holds the lock.
  locked_main 9>&-
}

main "$@"
