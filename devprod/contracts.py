"""Names that the program, the CLI, the Release function and the policy rules must agree on, defined once.

Pure constants: the Release function ships this module, so it imports nothing.
"""

from __future__ import annotations

# Tags that mark what a resource is for. The deploy targets production hosts by
# STACK_TAG + ROLE_TAG (S16): SendCommand is allowed only on instances carrying both.
STACK_TAG = "devprod:stack"
ROLE_TAG = "devprod:role"
PRODUCTION_ROLE = "production"
DEVELOPER_ROLE = "developer"
# Whose box an instance is (its value is the developer's name); access
# policies name the box by it too (S29).
DEVELOPER_TAG = "devprod:developer"
# A person's access policy carries the name of the developer it is for (S29).
ACCESS_TAG = "devprod:access-of"
# Operators' access policy carries the name of the stack whose production it covers (S29).
OPERATOR_TAG = "devprod:operators-of"


def production_target(stack: str) -> dict[str, str]:
    """The tags that make an instance (and the deploy document) this stack's production."""
    return {STACK_TAG: stack, ROLE_TAG: PRODUCTION_ROLE}


def describe_target(stack: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in production_target(stack).items())


# Stack output keys read by the CLI (devprod/outputs.py) and exported by components/program.py.
OUT_PRODUCTION = "production"
OUT_PIPELINE = "pipeline"
OUT_DEVELOPERS = "developers"
OUT_DOCUMENT = "documentName"
OUT_HEALTH_URL = "healthUrl"
OUT_REGION = "region"
OUT_LOG_GROUP = "logGroupName"
OUT_BUCKET = "artifactBucket"
OUT_PIPELINE_NAME = "name"
OUT_INSTANCE_ID = "instanceId"
OUT_ACCESS_POLICY_ARN = "accessPolicyArn"
OUT_OPERATOR_POLICY_ARN = "operatorPolicyArn"
# Issue #15: every production host (host 1 first), the HTTPS front and what Bake watches.
OUT_INSTANCE_IDS = "instanceIds"
OUT_LOAD_BALANCER_DNS = "loadBalancerDns"
OUT_DOMAIN = "domain"
OUT_LIVE_RELEASE_PARAMETER = "liveReleaseParameter"
OUT_ALARM_NAMES = "alarmNames"
# Behind a load balancer: the target group a rollout takes each batch out of, and the port hosts are registered on.
OUT_TARGET_GROUP = "targetGroupArn"
OUT_APP_PORT = "appPort"


# The release every production host should serve: "<40-hex sha> <64-hex sha256>".
# The Release function writes it once a rollout ends with every host on one
# release (so does `devprod deploy` / `rollback`); a host that boots reads it
# and deploys that release before it takes traffic. It is not under the app's
# parameter path: everything there becomes the app's environment.
LIVE_RELEASE_UNSET = "none"


def live_release_parameter(stack: str) -> str:
    return f"/devprod/{stack}/live-release"


def live_release_value(release: str, checksum: str) -> str:
    return f"{release} {checksum}"


def parse_live_release(value: str | None) -> tuple[str, str] | None:
    """(sha, sha256) from the parameter's value; None when unset or not in the format above."""
    parts = (value or "").split()
    hexdigits = set("0123456789abcdef")
    if len(parts) == 2 and len(parts[0]) == 40 and len(parts[1]) == 64 and set("".join(parts)) <= hexdigits:
        return parts[0], parts[1]
    return None


# Metrics the production host publishes from its proxy's access log, one
# datapoint a minute, in namespace proxy_metrics_namespace(stack), dimension {"Stack": <stack>} only, so the hosts of a
# stack add up into one series that alarms watch (used when there is no load
# balancer to report them).
PROXY_METRICS_NAMESPACE = "devprod/Proxy"


def proxy_metrics_namespace(stack: str) -> str:
    """One namespace per stack: a host may publish only its own stack's metrics (IAM conditions
    on the namespace, not on dimensions), so one stack's hosts cannot set off another's alarms."""
    return f"{PROXY_METRICS_NAMESPACE}/{stack}"

PROXY_REQUESTS = "Requests"          # requests nginx answered in the minute
PROXY_SERVER_ERRORS = "ServerErrors"  # of them, answered 5xx (upstream failures included)
PROXY_UNHEALTHY = "UnhealthyHosts"    # 1 from each host whose health check through nginx failed
