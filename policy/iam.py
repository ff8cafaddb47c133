"""IAM rules S12-S16 as pure functions over policy documents (dicts). Each returns problems, [] when fine."""

from __future__ import annotations

import json
from typing import Any, Iterable

GITHUB_ISSUER = "token.actions.githubusercontent.com"
# Actions that IAM cannot scope to a resource: "Resource": "*" is the only form (S12).
UNSCOPABLE_ACTIONS = frozenset(
    {
        "ec2:DescribeInstances",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
        "ssm:ListCommands",
        "ssm:CancelCommand",
        "codepipeline:PutJobSuccessResult",
        "codepipeline:PutJobFailureResult",
        "logs:DescribeLogGroups",
        "codebuild:ListProjects",
        "sts:GetCallerIdentity",
        # The SSM agent's message channels (Session Manager and Run Command).
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:AcknowledgeMessage",
        "ec2messages:DeleteMessage",
        "ec2messages:FailMessage",
        "ec2messages:GetEndpoint",
        "ec2messages:GetMessages",
        "ec2messages:SendReply",
    }
)


def load(document: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else document


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


as_list = _list


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


def github_trust_problems(
    document: str | dict[str, Any], *, provider_arn: str, repository: str, branch: str
) -> list[str]:
    """S14: exactly this account's GitHub provider, one StringEquals holding aud and sub, nothing else."""
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
    expected = {
        f"{GITHUB_ISSUER}:aud": "sts.amazonaws.com",
        f"{GITHUB_ISSUER}:sub": f"repo:{repository}:ref:refs/heads/{branch}",
    }
    for key, value in expected.items():
        if key not in block:
            problems.append(f"missing {key}")
        elif block[key] != value:
            problems.append(f"{key} is {block[key]!r}; must be exactly {value!r}")
    extra = set(block) - set(expected)
    if extra:
        problems.append(f"unexpected condition keys {sorted(extra)}")
    for key, value in block.items():
        if any(ch in str(value) for ch in "*?"):
            problems.append(f"{key} has a wildcard: {value!r}")
    return problems


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
