"""Small helpers shared by components: tags and IAM policy documents."""

from __future__ import annotations

import json
from typing import Any, Mapping

import pulumi

AWS_ACCOUNT_PLACEHOLDER_NOTE = "account id comes from sts:GetCallerIdentity at up time"


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
