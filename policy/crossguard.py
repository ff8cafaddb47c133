"""The rules as CrossGuard policies. Importing this starts nothing; policy/__main__.py builds the pack."""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policy.rules import RULES, Rule


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


def policies() -> list[ResourceValidationPolicy]:
    return [to_policy(rule) for rule in RULES]
