#!/bin/bash
# devprod-first-deploy.sh: a new production host deploys the live release at its first boot.
#
# Environment: LIVE_RELEASE_PARAMETER (/devprod/STACK/live-release), DOCUMENT
# (the stack's deploy document), optional REGION. Runs as root from prod.sh.
#
# Why this design: the release a new host must serve is the one the Release
# function (or `devprod deploy`/`rollback`) recorded in the live-release
# parameter as "<sha> <sha256>". Rather than a second copy of the deploy logic,
# the host fetches the deploy document (ssm:GetDocument, that document only)
# and runs its own script text with the same environment SSM would give it
# (SSM_release, SSM_checksum, SSM_action), so scripts/deploy.sh stays the
# only deploy logic, checksum check (S26) and health gate (D3) included.
# nginx has no server block until this deploy writes it, so the host answers
# no health check before it serves the live release.
#
# Exit codes: 0 deployed, or nothing to deploy (parameter unset: the host
# waits for the first deploy, as before issue #15); 2 the parameter's value is
# malformed; 3 AWS refused a read; otherwise deploy.sh's own code.
set -Eeuo pipefail

: "${LIVE_RELEASE_PARAMETER:?}" "${DOCUMENT:?}"
region=()
[[ -n "${REGION:-}" ]] && region=(--region "${REGION}")

log() { printf '%s devprod-first-deploy: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

value=$(aws ssm get-parameter "${region[@]}" --name "${LIVE_RELEASE_PARAMETER}" \
  --query Parameter.Value --output text) || { log "cannot read ${LIVE_RELEASE_PARAMETER}"; exit 3; }
if [[ "${value}" == none ]]; then
  log "no live release yet (${LIVE_RELEASE_PARAMETER} is none): waiting for the first deploy"
  exit 0
fi
if ! [[ "${value}" =~ ^([0-9a-f]{40})\ ([0-9a-f]{64})$ ]]; then
  log "${LIVE_RELEASE_PARAMETER}: '${value:0:120}' is not '<sha> <sha256>'; not deploying"
  exit 2
fi
release="${BASH_REMATCH[1]}" checksum="${BASH_REMATCH[2]}"

content=$(aws ssm get-document "${region[@]}" --name "${DOCUMENT}" --document-format JSON \
  --query Content --output text) || { log "cannot read the deploy document ${DOCUMENT}"; exit 3; }
# The step named "deploy" of a schema 2.2 document: its runCommand lines are the script.
script=$(python3 -c '
import json, sys
document = json.loads(sys.stdin.read())
steps = [s for s in document.get("mainSteps", []) if s.get("name") == "deploy"]
if len(steps) != 1:
    sys.exit("the deploy document has no single step named deploy")
print("\n".join(steps[0]["inputs"]["runCommand"]))
' <<<"${content}") || { log "the deploy document ${DOCUMENT} is not a devprod deploy document"; exit 3; }

log "deploying the live release ${release} from ${DOCUMENT}"
# In a root-only file, as the SSM agent does (never a path another user can change, D10).
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
printf '%s\n' "${script}" >"${work}/deploy"
status=0
SSM_release="${release}" SSM_checksum="${checksum}" SSM_action=deploy bash "${work}/deploy" || status=$?
log "deploy of ${release} exited ${status}"
exit "${status}"
