"""The rules as CrossGuard policies. Importing this starts nothing; policy/__main__.py builds the pack."""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import RULES, Rule
from policy.stack_rules import STACK_RULES, StackContext, StackResource, StackRule, refs_of

# `pulumi preview --policy-pack policy --policy-pack-config policy/config.json`:
# the managed policies the stack config allows on instance roles (S20).
ALLOWED_MANAGED_POLICIES = "allowedManagedPolicies"


def options_of(args: ResourceValidationArgs) -> dict[str, Any]:
    opts = args.opts
    return {
        "protect": bool(getattr(opts, "protect", False)),
        "ignoreChanges": list(getattr(opts, "ignore_changes", None) or []),
        "deleteBeforeReplace": getattr(opts, "delete_before_replace", None),
        # CrossGuard does not pass retainOnDelete; `devprod plan` checks it.
        "retainOnDelete": None,
    }


def to_policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, dict(args.props), options_of(args)):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule.name,
        description=f"{rule.id}: {rule.description}",
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def to_stack_policy(rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            StackResource(urn=r.urn, type=r.resource_type, name=r.name, props=dict(r.props), refs=refs_of(r.props))
            for r in args.resources
        ]
        config = dict(args.get_config() or {})
        context = StackContext(allowed_managed_policies=frozenset(config.get(ALLOWED_MANAGED_POLICIES) or ()))
        for finding in rule(resources, context):
            report_violation(finding.message, finding.urn)

    return StackValidationPolicy(
        name=rule.name,
        description=f"{rule.id}: {rule.description}",
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={ALLOWED_MANAGED_POLICIES: {"type": "array", "items": {"type": "string"}, "default": []}}
        ),
    )


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [to_policy(rule) for rule in RULES] + [to_stack_policy(rule) for rule in STACK_RULES]
