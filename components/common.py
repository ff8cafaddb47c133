"""Small helpers shared by components: tags and IAM policy documents."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import pulumi
import pulumi_aws as aws
from pulumi.output import _OutputData  # the SDK's own record of an Output (pinned: pyproject.toml)

from policy.iam import RUN_COMMAND_CHANNEL_ACTIONS, SESSION_CHANNEL_ACTIONS

T = TypeVar("T")

def tags_for(base: Mapping[str, str], logical_name: str, **extra: str) -> dict[str, str]:
    """Tags for one child: the stack's tags, the logical name as Name, then extras."""
    return {**base, "Name": logical_name, **extra}


def service_trust_policy(service: str, account_id: pulumi.Input[str] | None = None) -> pulumi.Input[str]:
    """Trust exactly one service principal (S13), confused-deputy guarded when possible.

    A text when the account is known or absent: an Output only when the account is an
    Output, whose dependencies `apply_all` then carries."""

    def render(account: str | None) -> str:
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }
        if account:
            statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
        return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

    if account_id is None or isinstance(account_id, str):
        return render(account_id)
    return apply_all(render, account_id)


def apply_all(fn: Callable[..., T], *values: pulumi.Input[Any]) -> pulumi.Output[T]:
    """`fn(*their values)` as an Output: `Output.all(*values).apply(lambda v: fn(*v))` for
    values that are plain or Outputs of plain values (ids, ARNs, account numbers), and
    for a `fn` that returns a plain value.

    The same result: every value's resources as dependencies; known when all are (`fn`
    runs only then); secret when any is; the first failure of a value fails it
    (tests/test_apply_all.py compares the two for every combination). Built from
    callbacks on the values' own futures, without a task: Output.all wraps each Output
    argument in one more apply (from_input's deep unwrap, which these values do not
    need), gathers them in another task and the apply is a third, each woken once per
    value it waits for. A developer's box makes five of these; a task and its wake-ups
    cost an offline plan about 100,000 instructions (docs/benchmarks.md).
    """
    slots = [_as_output(v) for v in values]
    outputs = [slot for slot in slots if isinstance(slot, pulumi.Output)]
    loop = outputs[0]._data.get_loop() if outputs else asyncio.get_event_loop()
    result: asyncio.Future = loop.create_future()
    waiting = [len(outputs)]

    def settle(done: asyncio.Future | None) -> None:
        if result.done():
            if done is not None and not done.cancelled():
                done.exception()  # a later failure, retrieved as gather retrieves it (no log)
            return
        if done is not None and (done.cancelled() or done.exception() is not None):
            _fail(result, done)
            return
        waiting[0] -= 1
        if waiting[0] <= 0:
            _run(result, fn, slots)

    for output in outputs:
        output._data.add_done_callback(settle)
    if not outputs:
        loop.call_soon(settle, None)  # on the loop, as an apply's fn runs
    return pulumi.Output._from_data(result)


def _as_output(value: Any) -> Any:
    """What Output.all waits for or unwraps (an Output, an awaitable, a list or map holding
    an Output) as an Output; a plain value as it is, without the task from_input makes."""
    if isinstance(value, pulumi.Output):
        return value
    if inspect.isawaitable(value) or _holds_output(value):
        return pulumi.Output.from_input(value)
    return value


def _fail(result: asyncio.Future, done: asyncio.Future) -> None:
    if done.cancelled():
        result.cancel()
    else:
        result.set_exception(done.exception())


def _run(result: asyncio.Future, fn: Callable[..., Any], slots: list[Any]) -> None:
    """Settle `result` with what `fn` gives, as a task settles with what its coroutine does:
    StopIteration becomes a RuntimeError (PEP 479; a future cannot hold one), a
    cancellation cancels it, KeyboardInterrupt and SystemExit fail it and go on up."""
    try:
        result.set_result(_combined(fn, slots))
    except StopIteration as stop:
        error = RuntimeError("apply_all's fn raised StopIteration")
        error.__cause__ = stop
        result.set_exception(error)
    except asyncio.CancelledError:
        result.cancel()
    except (KeyboardInterrupt, SystemExit) as leaving:
        result.set_exception(leaving)
        raise
    except BaseException as error:  # noqa: BLE001 - fails the Output, as a task's failure does
        result.set_exception(error)


def _combined(fn: Callable[..., T], slots: list[Any]) -> Any:
    """The Output's data once every value has one: `fn` runs only when all are known."""
    datas = [slot._data.result() for slot in slots if isinstance(slot, pulumi.Output)]
    found: set[pulumi.Resource] = set()
    for data in datas:
        found |= data.resources
    known = all(data.is_known for data in datas)
    secret = any(data.is_secret for data in datas)
    if not known:
        return _OutputData(resources=found, value=None, is_known=False, is_secret=secret)
    resolved = iter(datas)  # in the slots' order
    plain = [next(resolved).value if isinstance(slot, pulumi.Output) else slot for slot in slots]
    refused = any(_holds_output(v) for v in plain)
    if not refused:
        answer = fn(*plain)
        refused = isinstance(answer, pulumi.Output) or inspect.isawaitable(answer)
        if inspect.iscoroutine(answer):
            answer.close()  # refused below: closed, not left behind never awaited
    if refused:
        # Output.all would unwrap these (and keep their secret flag): a caller needs it.
        raise TypeError("apply_all takes plain values and Outputs of plain values, and a fn returning a "
                        "plain value; use Output.all for anything holding an Output")
    return _OutputData(resources=found, value=answer, is_known=True, is_secret=secret)


def _holds_output(value: Any) -> bool:
    if isinstance(value, pulumi.Output):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_output(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_output(v) for v in value.values())
    return False


def instance_arn(region: str, account: str, instance_id: str) -> str:
    """An EC2 instance's ARN; `*` for every instance of the account in the region."""
    return f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"


def policy_document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


GITHUB_ISSUER = "token.actions.githubusercontent.com"


def github_provider_arn(account: str) -> str:
    """The account's GitHub OIDC provider: IAM names it after the issuer, so there is only one."""
    return f"arn:aws:iam::{account}:oidc-provider/{GITHUB_ISSUER}"


def github_subject(repository: str, *, environment: str | None = None, pull_request: bool = False) -> str:
    """GitHub's default `sub` claim: a job in an environment, else a pull-request run (S14, S27)."""
    if (environment is None) == (not pull_request):
        raise ValueError("name exactly one of environment or pull_request")
    return f"repo:{repository}:environment:{environment}" if environment else f"repo:{repository}:pull_request"


def github_oidc_trust(provider_arn: str, subject: str) -> str:
    """S14: one statement, one StringEquals holding the audience and exactly one subject."""
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB_ISSUER}:aud": "sts.amazonaws.com", f"{GITHUB_ISSUER}:sub": subject}
                },
            }
        ]
    )


# The SSM agent's own policy (S20), written here instead of attaching
# AmazonSSMManagedInstanceCore, which also allows ssm:GetParameter(s) on every
# parameter of the account: register the instance, plus the Session Manager
# and Run Command channels (Resource "*": they have no resource-level scope).
def ssm_agent_statements(region: str, account: str) -> list[dict[str, Any]]:
    """The SSM agent's minimal policy: register the instance, Session Manager and Run Command channels."""
    return [
        {
            "Sid": "RegisterInstance",
            "Effect": "Allow",
            "Action": "ssm:UpdateInstanceInformation",
            "Resource": instance_arn(region, account, "*"),
        },
        {"Sid": "SessionManagerChannel", "Effect": "Allow", "Action": list(SESSION_CHANNEL_ACTIONS), "Resource": "*"},
        {"Sid": "RunCommandChannel", "Effect": "Allow", "Action": list(RUN_COMMAND_CHANNEL_ACTIONS), "Resource": "*"},
    ]


# What the account keeps on a customer-managed key it creates: manage it,
# rotate it, schedule its deletion; never use it (no Encrypt, Decrypt,
# GenerateDataKey*, ReEncrypt*, and no CreateGrant, which would hand use on).
# Use is granted per key, to named principals.
KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)


def log_writes_statement(sid: str, log_group_arn: str, *, describe_streams: bool = False) -> dict[str, Any]:
    """Write events into one log group and its streams (agents that look their stream up need DescribeLogStreams)."""
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"] + (["logs:DescribeLogStreams"] if describe_streams else [])
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"]}


def key_admin_statement(account: str) -> dict[str, Any]:
    """The account may manage a key (so it is never orphaned) but not use it."""
    return {
        "Sid": "AccountAdministersTheKey",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": list(KEY_ADMIN_ACTIONS),
        "Resource": "*",
    }


# IMDSv2 only, and a hop limit of 1 so containers on the host cannot reach it (S1).
METADATA_OPTIONS = {"http_tokens": "required", "http_put_response_hop_limit": 1, "http_endpoint": "enabled"}


def encrypted_root(size_gib: int, kms_key_arn: str | None = None) -> dict[str, Any]:
    """An encrypted gp3 root volume (S2); a KMS key only by ARN."""
    return {
        "volume_type": "gp3",
        "volume_size": size_gib,
        "encrypted": True,
        "kms_key_id": kms_key_arn,
        "delete_on_termination": True,
    }


def egress_anywhere(description: str) -> list[dict[str, Any]]:
    return [
        {
            "description": description,
            "protocol": "-1",
            "from_port": 0,
            "to_port": 0,
            "cidr_blocks": ["0.0.0.0/0"],
            "ipv6_cidr_blocks": ["::/0"],
        }
    ]


@dataclass(frozen=True)
class InstanceRoleSpec:
    """What an instance role gets besides the SSM agent's policy written by us."""

    region: str
    account_id: pulumi.Input[str]
    # Managed policies the stack config allows by ARN (S20); none by default.
    managed_policies: tuple[str, ...] = ()


def managed_policy_child_name(name: str, arn: str) -> str:
    """A stable child name per attached policy, from the policy's own name."""
    return f"{name}-attach-{re.sub(r'[^A-Za-z0-9-]', '-', arn.rsplit('/', 1)[1])}"


def instance_role(
    parent: pulumi.Resource, name: str, description: str, tags: Mapping[str, str], spec: InstanceRoleSpec
) -> tuple[aws.iam.Role, aws.iam.InstanceProfile]:
    """`{name}-role` trusted by EC2 with the SSM agent's minimal policy, and its `{name}-profile`."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
        description=description,
        tags=tags_for(tags, f"{name}-role"),
        opts=child,
    )
    aws.iam.RolePolicy(
        f"{name}-ssm-agent",
        role=role.id,
        policy=apply_all(lambda account: policy_document(ssm_agent_statements(spec.region, account)), spec.account_id),
        opts=child,
    )
    for arn in spec.managed_policies:
        aws.iam.RolePolicyAttachment(managed_policy_child_name(name, arn), role=role.name, policy_arn=arn, opts=child)
    profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags_for(tags, f"{name}-profile"), opts=child)
    return role, profile


@lru_cache(maxsize=None)
def read_text(path: Path) -> str:
    """A file of this repository, read once per process (at plan time, never at import)."""
    return path.read_text()


@lru_cache(maxsize=None)
def heredoc_body(path: Path, delimiter: str) -> str:
    """A file's exact text for a quoted heredoc; refuses a line that would end the heredoc early.

    Checked once per file and delimiter (every box's user data carries the same scripts)."""
    text = read_text(path)
    if any(line.strip() == delimiter for line in text.splitlines()):
        raise ValueError(f"{path} contains the line {delimiter}, which would end the heredoc that carries it")
    return text


def script_with_settings(path: Path, settings: list[str], who: str) -> str:
    """A script file with validated `NAME=value` lines put after its shebang."""
    body = read_text(path)
    body = body.split("\n", 1)[1] if body.startswith("#!") else body
    header = ["#!/bin/bash", f"# Settings written by devprod ({who}); the script follows.", *settings]
    return "\n".join(header) + "\n" + body
