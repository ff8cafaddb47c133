"""One component at a time under the recording mocks, built from its own Args.

A failure in these plans points at the component, not at the program that
wires the stack together (the stack-level tests use `prod_plan`/`dev_plan`).
The neighbours a component receives as inputs are plain values here.
"""

from __future__ import annotations

from typing import Any

from components.config import StackConfig, parse_stack_config
from components.deploy_pipeline import DeployPipeline, DeployPipelineArgs
from components.production_service import ProductionService, ProductionServiceArgs
from devprod.contracts import live_release_parameter, production_target
from devprod.plan import PLACEHOLDER_ACCOUNT, Plan, record

BUCKET = "devprod-prod-artifacts-0123"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
DOCUMENT = "production-deploy-0123"
DOCUMENT_ARN = f"arn:aws:ssm:eu-central-1:{PLACEHOLDER_ACCOUNT}:document/{DOCUMENT}"
TAGS = {"devprod:stack": "prod"}


def _config(raw: dict[str, Any], stack: str) -> StackConfig:
    return parse_stack_config(raw, project="devprod", stack=stack)


def service_plan(raw: dict[str, Any], stack: str = "prod") -> Plan:
    """ProductionService alone: a made-up VPC, subnet and artifact bucket around it."""
    config = _config(raw, stack)
    assert config.production is not None

    def build() -> None:
        ProductionService(
            "production",
            ProductionServiceArgs(
                settings=config.production,
                stack=stack,
                region=config.region,
                account_id=PLACEHOLDER_ACCOUNT,
                vpc_id="vpc-0123",
                subnet_id="subnet-0123",
                artifact_bucket=BUCKET,
                artifact_bucket_arn=BUCKET_ARN,
                tags=TAGS,
            ),
        )

    return record(build, project="devprod", stack=stack)


def pipeline_plan(raw: dict[str, Any], stack: str = "prod", bake_alarms: tuple[str, ...] = ()) -> Plan:
    """DeployPipeline alone: a made-up bucket, deploy document and service alarms, the real production target tags."""
    config = _config(raw, stack)
    assert config.pipeline is not None and config.production is not None
    settings = config.pipeline

    def build() -> None:
        DeployPipeline(
            "delivery",
            DeployPipelineArgs(
                settings=settings,
                stack=stack,
                region=config.region,
                account_id=PLACEHOLDER_ACCOUNT,
                artifact_bucket=BUCKET,
                artifact_bucket_arn=BUCKET_ARN,
                document_name=DOCUMENT,
                document_arn=DOCUMENT_ARN,
                target_tags=production_target(stack),
                package_commands=settings.package_commands_for(config.production.runtime),
                bake_alarms=bake_alarms,
                live_release_parameter=live_release_parameter(stack),
                tags=TAGS,
            ),
        )

    return record(build, project="devprod", stack=stack)
