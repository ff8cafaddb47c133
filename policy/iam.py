"""IAM rules S12-S16 and the GitHub subjects of S27 as pure functions over policy documents; [] when fine."""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

GITHUB_ISSUER = "token.actions.githubusercontent.com"
# The SSM agent's channels: Session Manager (sessions, SSH over SSM) and Run
# Command. Neither family has resource-level permissions in IAM.
SESSION_CHANNEL_ACTIONS = (
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
RUN_COMMAND_CHANNEL_ACTIONS = (
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)

# Actions that IAM cannot scope to a resource: "Resource": "*" is the only form (S12).
UNSCOPABLE_ACTIONS = frozenset(
    {
        "ec2:DescribeInstances",
        "ssm:DescribeInstanceInformation",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
        "ssm:ListCommands",
        "ssm:CancelCommand",
        "codepipeline:PutJobSuccessResult",
        "codepipeline:PutJobFailureResult",
        "logs:DescribeLogGroups",
        "codebuild:ListProjects",
        "sts:GetCallerIdentity",
        # Load balancers' Describe* (operators' host health) and metric writes (only
        # the cloudwatch:namespace condition narrows these).
        "elasticloadbalancing:DescribeTargetHealth",
        "cloudwatch:PutMetricData",
        # The SSM agent's message channels (Session Manager and Run Command).
        *SESSION_CHANNEL_ACTIONS,
        *RUN_COMMAND_CHANNEL_ACTIONS,
    }
)


def load(document: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else document


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


as_list = _list


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    """S8: refuse every request to the bucket and its objects that does not use TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def statements(document: str | dict[str, Any]) -> list[dict[str, Any]]:
    return _list(load(document).get("Statement"))


def wildcard_problems(document: str | dict[str, Any]) -> list[str]:
    """S12: no Allow of `*`/`service:*` actions; no Resource `*` for actions that can be scoped."""
    problems = []
    for index, statement in enumerate(statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _list(statement.get("Action"))]
        for action in actions:
            if action == "*" or action.endswith(":*"):
                problems.append(f"Statement[{index}]: action {action!r} allows every action")
        if "NotAction" in statement:
            problems.append(f"Statement[{index}]: Allow with NotAction grants everything else")
        # In a key policy (a statement with a Principal), Resource "*" means
        # "this key", the only form KMS accepts.
        if "*" in _list(statement.get("Resource")) and "Principal" not in statement:
            scopable = [a for a in actions if a not in UNSCOPABLE_ACTIONS]
            if scopable:
                problems.append(f"Statement[{index}]: Resource '*' for scopable actions {scopable}")
    return problems


def service_trust_problems(document: str | dict[str, Any], service: str | None = None) -> list[str]:
    """S13: a service role trusts exactly one service principal, with a confused-deputy condition."""
    stmts = statements(document)
    problems = []
    principals = set()
    for index, statement in enumerate(stmts):
        principal = statement.get("Principal", {})
        services = _list(principal.get("Service")) if isinstance(principal, dict) else []
        if not services or set(principal) != {"Service"}:
            problems.append(f"Statement[{index}]: principal must be one service, got {principal!r}")
            continue
        principals.update(services)
        if statement.get("Action") != "sts:AssumeRole":
            problems.append(f"Statement[{index}]: action must be sts:AssumeRole")
        condition = statement.get("Condition", {})
        keys = {k for block in condition.values() for k in block}
        if service != "ec2.amazonaws.com" and not keys & {"aws:SourceAccount", "aws:SourceArn"}:
            problems.append(f"Statement[{index}]: no aws:SourceAccount/aws:SourceArn condition")
    if len(principals) != 1:
        problems.append(f"trusts {sorted(principals)}; exactly one service principal allowed")
    elif service is not None and principals != {service}:
        problems.append(f"trusts {sorted(principals)}; expected {service}")
    return problems


# GitHub's default `sub` claims: a push to a branch, a job in an environment, a
# pull-request run. One exact subject per trust; no character that IAM or a
# reader could take for a pattern (S14, S27).
GITHUB_SUBJECT = re.compile(
    r"^repo:[A-Za-z0-9-]+/[A-Za-z0-9._-]+:"
    r"(ref:refs/heads/[A-Za-z0-9._/-]+|environment:[A-Za-z0-9._-]+|pull_request)$"
)
SUBJECT_FORMS = (
    "repo:OWNER/REPO:ref:refs/heads/BRANCH, repo:OWNER/REPO:environment:NAME or repo:OWNER/REPO:pull_request"
)
AUD_KEY = f"{GITHUB_ISSUER}:aud"
SUB_KEY = f"{GITHUB_ISSUER}:sub"


def github_subject_problems(sub: Any, expected: str | None = None) -> list[str]:
    """One subject, in one of GitHub's exact forms (and `expected`, when the caller knows it)."""
    if isinstance(sub, list):
        return [f"{SUB_KEY} names {len(sub)} subjects {sub!r}; exactly one allowed, as a string"]
    if not isinstance(sub, str) or not GITHUB_SUBJECT.match(sub):
        return [f"{SUB_KEY} {sub!r} is not one exact subject ({SUBJECT_FORMS})"]
    if expected is not None and sub != expected:
        return [f"{SUB_KEY} is {sub!r}; must be exactly {expected!r}"]
    return []


def github_trust_problems(
    document: str | dict[str, Any], *, provider_arn: str, subject: str | None = None
) -> list[str]:
    """S14: this account's GitHub provider, one StringEquals holding aud and one exact sub, nothing else."""
    stmts = statements(document)
    if len(stmts) != 1:
        return [f"expected one statement, got {len(stmts)}"]
    (statement,) = stmts
    problems = []
    if statement.get("Effect") != "Allow" or statement.get("Action") != "sts:AssumeRoleWithWebIdentity":
        problems.append("statement must Allow sts:AssumeRoleWithWebIdentity")
    if statement.get("Principal") != {"Federated": provider_arn}:
        problems.append(f"principal must be {{'Federated': {provider_arn!r}}}, got {statement.get('Principal')!r}")
    if not provider_arn.endswith(f":oidc-provider/{GITHUB_ISSUER}"):
        problems.append(f"{provider_arn!r} is not a {GITHUB_ISSUER} provider")
    condition = statement.get("Condition")
    if not isinstance(condition, dict) or set(condition) != {"StringEquals"}:
        operators = sorted(condition) if isinstance(condition, dict) else condition
        problems.append(f"condition must be exactly one StringEquals block, got {operators!r}")
        return problems
    block = condition["StringEquals"]
    if AUD_KEY not in block:
        problems.append(f"missing {AUD_KEY}")
    elif block[AUD_KEY] != "sts.amazonaws.com":
        problems.append(f"{AUD_KEY} is {block[AUD_KEY]!r}; must be exactly 'sts.amazonaws.com'")
    if SUB_KEY not in block:
        problems.append(f"missing {SUB_KEY}")
    else:
        problems += github_subject_problems(block[SUB_KEY], subject)
    extra = set(block) - {AUD_KEY, SUB_KEY}
    if extra:
        problems.append(f"unexpected condition keys {sorted(extra)}")
    return problems


def github_subject_of(document: str | dict[str, Any]) -> str | None:
    """The one exact subject a GitHub trust names, or None when it names none (or several)."""
    stmts = statements(document)
    if len(stmts) != 1:
        return None
    sub = ((stmts[0].get("Condition") or {}).get("StringEquals") or {}).get(SUB_KEY)
    return sub if isinstance(sub, str) and GITHUB_SUBJECT.match(sub) else None


def duplicate_keys(text: str) -> list[str]:
    """JSON with a key twice (json.loads silently keeps the last); IAM refuses or misreads it."""
    found: list[str] = []

    def hook(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        seen = set()
        for key, _ in pairs:
            if key in seen:
                found.append(key)
            seen.add(key)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return [f"duplicate key {k!r}" for k in found]
