#!/bin/bash
# Gives a developer box the developer's tools, from the distribution's own
# packages, and (once) their dotfiles, cloned and installed as the developer.
#
# Carried by the box's SSM document (components/developer_instance.py) and run
# as root by its association: at the first agent start, after every `pulumi up`
# that changes `tools` or `dotfiles`, and every 30 minutes. Tools already on
# PATH are not installed again; dotfiles are installed once per home (a marker
# file), so later edits in ~/.dotfiles are the developer's own.
#
# Settings (environment, validated by the document's allowedPattern):
#   DEVPROD_USER  the developer's Linux user
#   TOOLS         space-separated subset of: docker git node python (may be empty)
#   DOTFILES      https git URL, or empty
#   DEVPROD_HOME  the developer's home (default: the passwd entry; tests)
#   OS_RELEASE    file naming the distribution (default /etc/os-release; tests)
# Exit codes: 0 done, 1 a step failed (logged), 2 bad setting,
#   3 not ready yet (no such user or the home volume not mounted: the association retries).
set -Eeuo pipefail

: "${DEVPROD_USER:?}"
TOOLS="${TOOLS:-}"
DOTFILES="${DOTFILES:-}"
OS_RELEASE="${OS_RELEASE:-/etc/os-release}"
HOME_READY=".devprod-home"      # written by the first-boot script once the home volume is mounted
DOTFILES_DONE=".devprod-dotfiles"
INSTALL_TIMEOUT=600
# The scripts GitHub Codespaces looks for, in its order; without one, dot
# entries of the repository are linked into the home.
INSTALLERS=(install.sh install bootstrap.sh bootstrap script/bootstrap setup.sh setup script/setup)

log() { printf '%s devprod-box-tools: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
trap 'log "failed at line ${LINENO}"' ERR

as_developer() {
  # A login-less shell as the developer, in their home: their code never runs as root.
  runuser -u "${DEVPROD_USER}" -- env HOME="${HOME_DIR}" USER="${DEVPROD_USER}" "$@"
}

check_settings() {
  local tool
  for tool in ${TOOLS}; do
    case "${tool}" in docker | git | node | python) ;; *) log "unknown tool '${tool}'"; exit 2 ;; esac
  done
  if ! id -u "${DEVPROD_USER}" >/dev/null 2>&1; then
    log "no user ${DEVPROD_USER} yet (first boot still running); will retry"
    exit 3
  fi
  HOME_DIR="${DEVPROD_HOME:-$(getent passwd "${DEVPROD_USER}" | cut -d: -f6)}"
  if [[ ! -e "${HOME_DIR}/${HOME_READY}" ]]; then
    log "home ${HOME_DIR} not mounted yet; will retry"
    exit 3
  fi
}

family() {
  local id
  # shellcheck source=/dev/null  # os-release is shell assignments by its specification
  id="$(. "${OS_RELEASE}" && printf '%s' "${ID:-}")"
  case "${id}" in amzn) echo al2023 ;; ubuntu) echo ubuntu ;; *) log "unsupported distribution '${id}'"; exit 1 ;; esac
}

# tool -> the command that shows it is there, and its packages per distribution.
command_of() { case "$1" in docker) echo docker ;; git) echo git ;; node) echo node ;; python) echo python3 ;; esac; }
packages_of() {
  case "$1:$2" in
    al2023:docker) echo docker ;;
    al2023:git) echo git ;;
    al2023:node) echo nodejs npm ;;
    al2023:python) echo python3 python3-pip ;;
    ubuntu:docker) echo docker.io ;;
    ubuntu:git) echo git ;;
    ubuntu:node) echo nodejs npm ;;
    ubuntu:python) echo python3 python3-pip python3-venv ;;
  esac
}

install_tools() {
  local wanted="${TOOLS}" os tool packages=() more=()
  [[ -n "${DOTFILES}" ]] && wanted="${wanted} git"   # cloning needs it
  os="$(family)"
  for tool in ${wanted}; do
    if ! command -v "$(command_of "${tool}")" >/dev/null 2>&1; then
      read -r -a more <<<"$(packages_of "${os}" "${tool}")"
      packages+=("${more[@]}")
    fi
  done
  if ((${#packages[@]} == 0)); then
    log "tools: ${wanted:-none} already installed"
    return
  fi
  log "installing ${packages[*]} (${os})"
  if [[ "${os}" == al2023 ]]; then
    dnf install -y -q "${packages[@]}"
  else
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
  fi
}

enable_docker() {
  [[ " ${TOOLS} " == *" docker "* ]] || return 0
  log "docker: service enabled, ${DEVPROD_USER} in group docker"
  systemctl enable --now docker
  usermod -a -G docker "${DEVPROD_USER}"
}

link_dot_entries() {
  local entry name
  for entry in "${HOME_DIR}/.dotfiles"/.[!.]*; do
    name="$(basename "${entry}")"
    [[ -e "${entry}" && "${name}" != .git ]] || continue
    # Never replace what the developer already has.
    if [[ -e "${HOME_DIR}/${name}" || -L "${HOME_DIR}/${name}" ]]; then
      log "dotfiles: keeping the existing ~/${name}"
      continue
    fi
    as_developer ln -s "${entry}" "${HOME_DIR}/${name}"
  done
}

install_dotfiles() {
  [[ -n "${DOTFILES}" ]] || return 0
  if [[ -e "${HOME_DIR}/${DOTFILES_DONE}" ]]; then
    log "dotfiles: installed before (remove ~/${DOTFILES_DONE} to run again)"
    return
  fi
  log "dotfiles: cloning ${DOTFILES} into ~/.dotfiles as ${DEVPROD_USER}"
  [[ -e "${HOME_DIR}/.dotfiles" ]] || as_developer git clone --quiet --depth 1 -- "${DOTFILES}" "${HOME_DIR}/.dotfiles"
  local installer
  for installer in "${INSTALLERS[@]}"; do
    if [[ -f "${HOME_DIR}/.dotfiles/${installer}" ]]; then
      log "dotfiles: running ${installer} as ${DEVPROD_USER} (at most ${INSTALL_TIMEOUT}s)"
      (cd "${HOME_DIR}/.dotfiles" && as_developer timeout "${INSTALL_TIMEOUT}" bash "./${installer}")
      as_developer touch "${HOME_DIR}/${DOTFILES_DONE}"
      return
    fi
  done
  link_dot_entries
  as_developer touch "${HOME_DIR}/${DOTFILES_DONE}"
}

check_settings
install_tools
enable_docker
install_dotfiles
log "done"
