"""Small helpers shared by components: tags and IAM policy documents."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import pulumi
import pulumi_aws as aws

def tags_for(base: Mapping[str, str], logical_name: str, **extra: str) -> dict[str, str]:
    """Tags for one child: the stack's tags, the logical name as Name, then extras."""
    return {**base, "Name": logical_name, **extra}


def service_trust_policy(service: str, account_id: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
    """Trust exactly one service principal (S13), confused-deputy guarded when possible."""

    def render(account: str | None) -> str:
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }
        if account:
            statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
        return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

    return pulumi.Output.from_input(account_id).apply(render)


def policy_document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


SSM_CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
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


def instance_role(
    parent: pulumi.Resource, name: str, description: str, tags: Mapping[str, str]
) -> tuple[aws.iam.Role, aws.iam.InstanceProfile]:
    """`{name}-role` trusted by EC2 with the SSM agent's policy, and its `{name}-profile`."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
        description=description,
        tags=tags_for(tags, f"{name}-role"),
        opts=child,
    )
    aws.iam.RolePolicyAttachment(f"{name}-ssm-core", role=role.name, policy_arn=SSM_CORE_POLICY, opts=child)
    profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags_for(tags, f"{name}-profile"), opts=child)
    return role, profile


@lru_cache(maxsize=None)
def read_text(path: Path) -> str:
    """A file of this repository, read once per process (at plan time, never at import)."""
    return path.read_text()


def heredoc_body(path: Path, delimiter: str) -> str:
    """A file's exact text for a quoted heredoc; refuses a line that would end the heredoc early."""
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
