#!/bin/bash
# devprod-keepawake: keep this developer box from its idle stop for a while.
#
#   devprod-keepawake 3h      keep awake for 3 hours (also 90m, 1h30m; at most 12h)
#   devprod-keepawake off     withdraw your marker
#   devprod-keepawake         show what is in force
#
# Writes the expiry (epoch seconds) to DEVPROD_KEEPAWAKE_DIR/$USER, which
# devprod-idle-stop honours. Installed as /usr/local/bin/devprod-keepawake by
# the dev bootstrap. The idle script caps any marker at 12 hours after it first
# saw it, so this limit is a courtesy, not the guard.
#
# Exit codes: 0 done, 2 bad duration.
set -Eeuo pipefail

KEEPAWAKE_DIR="${DEVPROD_KEEPAWAKE_DIR:-/run/devprod/keepawake}"
NOW="${DEVPROD_NOW:-$(date +%s)}"  # overridable for tests, like the idle script's clock
MAX_SECONDS=$(( 12 * 3600 ))
MARKER="${KEEPAWAKE_DIR}/${USER:-$(id -un)}"

usage() { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }

seconds_of() {
  local text="$1" total=0
  [[ "${text}" =~ ^([0-9]+h)?([0-9]+m)?$ && -n "${text}" ]] || return 1
  if [[ "${text}" =~ ([0-9]+)h ]]; then total=$(( total + 10#${BASH_REMATCH[1]} * 3600 )); fi
  if [[ "${text}" =~ ([0-9]+)m ]]; then total=$(( total + 10#${BASH_REMATCH[1]} * 60 )); fi
  (( total > 0 )) || return 1
  printf '%s\n' "${total}"
}

show() {
  if [[ -f "${MARKER}" ]]; then
    printf 'keep-awake until %s\n' "$(date -d "@$(cat "${MARKER}")" '+%Y-%m-%d %H:%M %Z')"
  else
    printf 'no keep-awake marker; the box stops after its idle window\n'
  fi
}

write_marker() {
  local seconds="$1" temporary
  if (( seconds > MAX_SECONDS )); then
    printf 'devprod-keepawake: at most 12h; keeping awake for 12h\n' >&2
    seconds="${MAX_SECONDS}"
  fi
  temporary="$(mktemp "${KEEPAWAKE_DIR}/.${USER:-marker}.XXXXXX")"
  printf '%s\n' "$(( NOW + seconds ))" >"${temporary}"
  chmod 0644 "${temporary}"
  mv -f "${temporary}" "${MARKER}"
  show
}

main() {
  case "${1:-}" in
    "") show ;;
    off) rm -f "${MARKER}"; printf 'keep-awake withdrawn\n' ;;
    -h|--help) usage ;;
    *)
      local seconds
      seconds="$(seconds_of "$1")" || usage
      write_marker "${seconds}" ;;
  esac
}

main "$@"
