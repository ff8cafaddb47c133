#!/bin/bash
# First-boot bootstrap of a developer box (cloud-init user data).
#
# DeveloperInstance prepends validated settings to this file:
#   DEV_USER        Linux user, the developer's name (validated: ^[a-z][a-z0-9-]{1,20}$)
#   DEV_UID         fixed uid, so files on the home volume keep their owner across AMIs
#   SSH_PUBLIC_KEY  one validated OpenSSH public key line
#   HOME_VOLUME_ID  EBS volume id of the home volume (vol-...)
#   OS_FAMILY       al2023 | ubuntu
# No secrets pass through here: user data is readable by anyone with
# ec2:DescribeInstanceAttribute.
#
# This runs once, and devprod ignores later edits to it (R1). What must follow
# the stack config on a running box (the current SSH key, the idle stop and
# its settings) comes from the box's SSM association instead
# (scripts/host/devprod-box-setup.sh, devprod-authorized-keys.py). The key
# installed here is the first-boot key; devprod-authorized-keys retires it
# when the key is rotated. .devprod-home below tells it the home is mounted.
#
# Every step is idempotent: cloud-init runs this once per instance, but a
# replaced box (new AMI, new instance type) runs it again against the same
# home volume, which must come through untouched.
set -Eeuo pipefail

: "${DEV_USER:?}" "${DEV_UID:?}" "${SSH_PUBLIC_KEY:?}" "${HOME_VOLUME_ID:?}" "${OS_FAMILY:?}"
HOME_DIR="/home/${DEV_USER}"
DEVICE_WAIT_SECONDS="${DEVICE_WAIT_SECONDS:-600}"

log() { printf '%s devprod-bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
trap 'log "failed at line ${LINENO}"' ERR

install_packages() {
  log "installing git and build tools"
  case "${OS_FAMILY}" in
    al2023)
      dnf -y -q install git make gcc gcc-c++ tar unzip jq ;;
    ubuntu)
      export DEBIAN_FRONTEND=noninteractive
      apt-get -q update
      apt-get -y -q install git build-essential unzip jq ;;
    *)
      log "unknown OS_FAMILY ${OS_FAMILY}"; return 1 ;;
  esac
}

# The attachment is created after the instance, so the disk appears some time
# after boot. On Nitro instances it is an NVMe device whose serial is the
# volume id without the dash; on Xen it is /dev/xvdh.
find_home_device() {
  local serial="${HOME_VOLUME_ID//-/}" waited=0 candidate
  while (( waited < DEVICE_WAIT_SECONDS )); do
    for candidate in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${serial}" /dev/xvdh /dev/sdh; do
      if [[ -b "${candidate}" ]]; then
        readlink -f "${candidate}"
        return 0
      fi
    done
    sleep 5
    waited=$(( waited + 5 ))
  done
  log "home volume ${HOME_VOLUME_ID} did not appear within ${DEVICE_WAIT_SECONDS}s"
  return 1
}

create_user() {
  if id "${DEV_USER}" >/dev/null 2>&1; then
    log "user ${DEV_USER} exists"
    return 0
  fi
  log "creating user ${DEV_USER} (uid ${DEV_UID})"
  # -M: the home directory comes from the volume, not from /etc/skel here.
  useradd -M -d "${HOME_DIR}" -u "${DEV_UID}" -U -s /bin/bash "${DEV_USER}"
  install -m 0440 /dev/stdin "/etc/sudoers.d/90-devprod-${DEV_USER}" <<<"${DEV_USER} ALL=(ALL) NOPASSWD:ALL"
}

mount_home() {
  local device uuid
  device="$(find_home_device)"
  # Format only a blank volume: blkid -p exits 2 when it finds no signature.
  # Anything else (an existing filesystem, a read error) leaves data alone.
  if blkid -p "${device}" >/dev/null 2>&1; then
    log "home volume ${device} already has a filesystem; keeping it"
  else
    local rc=0
    blkid -p "${device}" >/dev/null 2>&1 || rc=$?
    if [[ "${rc}" -ne 2 ]]; then
      log "blkid -p ${device} exited ${rc}; refusing to format"
      return 1
    fi
    log "formatting blank home volume ${device}"
    mkfs.ext4 -q -L devhome "${device}"
  fi
  uuid="$(blkid -s UUID -o value "${device}")"
  mkdir -p "${HOME_DIR}"
  if ! grep -q "UUID=${uuid}" /etc/fstab; then
    # nofail: a missing volume must not keep the box from booting into SSM.
    echo "UUID=${uuid} ${HOME_DIR} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2" >>/etc/fstab
  fi
  mountpoint -q "${HOME_DIR}" || mount "${HOME_DIR}"
  if [[ ! -e "${HOME_DIR}/.devprod-home" ]]; then
    log "seeding new home from /etc/skel"
    cp -rn /etc/skel/. "${HOME_DIR}/"
    date -u +%Y-%m-%dT%H:%M:%SZ >"${HOME_DIR}/.devprod-home"
  fi
  chown "${DEV_UID}:${DEV_UID}" "${HOME_DIR}"
}

install_ssh_key() {
  log "installing the public key for ${DEV_USER}"
  install -d -m 0700 -o "${DEV_UID}" -g "${DEV_UID}" "${HOME_DIR}/.ssh"
  local keys="${HOME_DIR}/.ssh/authorized_keys"
  touch "${keys}"
  grep -qxF "${SSH_PUBLIC_KEY}" "${keys}" || printf '%s\n' "${SSH_PUBLIC_KEY}" >>"${keys}"
  chown "${DEV_UID}:${DEV_UID}" "${keys}"
  chmod 0600 "${keys}"
}

main() {
  log "bootstrap of ${DEV_USER} on ${OS_FAMILY} starting"
  create_user
  mount_home
  install_ssh_key
  install_packages
  log "bootstrap done"
}

main "$@"
