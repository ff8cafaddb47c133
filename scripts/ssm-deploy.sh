#!/usr/bin/env bash
# Send the deploy document to this stack's production instances and wait for
# a terminal state; print each instance's output; fail on anything but Success.
# Runs in the pipeline's deploy CodeBuild project, and by hand.
#
# Environment:
#   DOCUMENT_NAME   the deploy document (required)
#   TARGET_STACK    value of the devprod:stack tag of the production host (required)
#   COMMIT_SHA      release to deploy (required for ACTION=deploy)
#   ACTION          deploy (default) | rollback
#   LOG_GROUP       CloudWatch log group for the command output (optional)
#   DEPLOY_TIMEOUT  seconds to wait in all (default 2100, longer than the document's 1800)
#   POLL_SECONDS    seconds between polls (default 5)
#   AWS_CLI         the AWS CLI to call (default aws)
# Exit codes: 0 success, 1 the deploy failed, 2 timed out, 3 bad input or no target.
set -Eeuo pipefail

DOCUMENT_NAME="${DOCUMENT_NAME:-}"
TARGET_STACK="${TARGET_STACK:-}"
COMMIT_SHA="${COMMIT_SHA:-}"
ACTION="${ACTION:-deploy}"
LOG_GROUP="${LOG_GROUP:-}"
DEPLOY_TIMEOUT="${DEPLOY_TIMEOUT:-2100}"
POLL_SECONDS="${POLL_SECONDS:-5}"
AWS_CLI="${AWS_CLI:-aws}"

log() { printf '%s ssm-deploy: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

validate() {
  [[ -n "${DOCUMENT_NAME}" && -n "${TARGET_STACK}" ]] || { log "DOCUMENT_NAME and TARGET_STACK are required"; exit 3; }
  [[ "${ACTION}" == deploy || "${ACTION}" == rollback ]] || { log "ACTION must be deploy or rollback"; exit 3; }
  if [[ "${ACTION}" == deploy && ! "${COMMIT_SHA}" =~ ^[0-9a-f]{7,40}$ ]]; then
    log "COMMIT_SHA is not a git sha: '${COMMIT_SHA}'"; exit 3
  fi
}

target_instances() {
  "${AWS_CLI}" ec2 describe-instances \
    --filters "Name=tag:devprod:stack,Values=${TARGET_STACK}" "Name=tag:devprod:role,Values=production" \
              "Name=instance-state-name,Values=running" \
    --query 'Reservations[].Instances[].InstanceId' --output text
}

send() {
  local -a args=(ssm send-command --document-name "${DOCUMENT_NAME}" --instance-ids "$@"
    --parameters "release=${COMMIT_SHA},action=${ACTION}" --max-concurrency 1 --max-errors 0
    --comment "devprod ${ACTION} ${COMMIT_SHA:-previous}" --query Command.CommandId --output text)
  if [[ -n "${LOG_GROUP}" ]]; then
    args+=(--cloud-watch-output-config "CloudWatchOutputEnabled=true,CloudWatchLogGroupName=${LOG_GROUP}")
  fi
  "${AWS_CLI}" "${args[@]}"
}

# Prints the status; an invocation that does not exist yet is Pending.
status_of() {
  "${AWS_CLI}" ssm get-command-invocation --command-id "$1" --instance-id "$2" \
    --query Status --output text 2>/dev/null || echo Pending
}

print_output() {
  log "output of $2:"
  "${AWS_CLI}" ssm get-command-invocation --command-id "$1" --instance-id "$2" \
    --query '[StandardOutputContent, StandardErrorContent]' --output text || true
}

main() {
  validate
  local -a instances
  read -r -a instances <<<"$(target_instances)"
  if (( ${#instances[@]} == 0 )); then
    log "no running instance tagged devprod:stack=${TARGET_STACK}, devprod:role=production"; exit 3
  fi
  log "${ACTION} ${COMMIT_SHA:-previous} on ${instances[*]} with ${DOCUMENT_NAME}"
  local command_id
  command_id="$(send "${instances[@]}")"
  log "command ${command_id}"

  local deadline=$(( SECONDS + DEPLOY_TIMEOUT )) failed=0 instance state
  local -A final=()
  while (( ${#final[@]} < ${#instances[@]} )); do
    if (( SECONDS >= deadline )); then
      log "timed out after ${DEPLOY_TIMEOUT}s; cancelling ${command_id}"
      "${AWS_CLI}" ssm cancel-command --command-id "${command_id}" >/dev/null 2>&1 || true
      exit 2
    fi
    for instance in "${instances[@]}"; do
      [[ -n "${final[${instance}]:-}" ]] && continue
      state="$(status_of "${command_id}" "${instance}")"
      case "${state}" in
        Pending|InProgress|Delayed|Cancelling) ;;
        *) final[${instance}]="${state}"; log "${instance}: ${state}"; print_output "${command_id}" "${instance}" ;;
      esac
    done
    (( ${#final[@]} < ${#instances[@]} )) && sleep "${POLL_SECONDS}"
  done
  for instance in "${instances[@]}"; do
    [[ "${final[${instance}]}" == Success ]] || failed=1
  done
  if (( failed )); then log "deploy failed"; exit 1; fi
  log "deploy succeeded"
}

main "$@"
