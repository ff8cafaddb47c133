"""Composes the stack from its validated config: what `__main__.py` runs."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from devprod import contracts as c
from components.artifact_store import ArtifactStore, ArtifactStoreArgs
from components.ci_identities import CiIdentities, CiIdentitiesArgs, actions_variables
from components.common import apply_all, github_provider_arn
from components.config import StackConfig, load_from_pulumi
from components.deploy_pipeline import DeployPipeline, DeployPipelineArgs, release_role_name
from components.developer_instance import DeveloperInstance, DeveloperInstanceArgs, ami_parameter, box_setup_document
from components.network import Network, NetworkArgs
from components.production_service import ProductionService, ProductionServiceArgs


def stack_tags(config: StackConfig) -> dict[str, str]:
    return {**config.tags, "devprod:project": config.project, c.STACK_TAG: config.stack}


def _developers(config: StackConfig, network: Network, account_id: pulumi.Output[str], tags: dict[str, str]) -> None:
    developers = {}
    images: dict[str, pulumi.Output[str]] = {}  # one lookup per image, not per box
    document = box_setup_document(tags)  # one for every box
    for dev in config.developers:
        parameter = ami_parameter(dev.os, dev.instance_type)
        if parameter not in images:
            images[parameter] = aws.ssm.get_parameter_output(name=parameter).value
        box = DeveloperInstance(
            dev.name,
            DeveloperInstanceArgs(
                developer=dev,
                subnet_id=network.subnet_ids[dev.availability_zone],
                vpc_id=network.vpc_id,
                region=config.region,
                account_id=account_id,
                host_alias=f"{dev.name}-{config.stack}",
                setup_document_name=document.name,
                setup_document_arn=document.arn,
                ami=images[parameter],
                tags=tags,
                managed_policies=config.instance_role_policies,
            ),
        )
        developers[dev.name] = {
            c.OUT_INSTANCE_ID: box.instance_id,
            "privateIp": box.private_ip,
            "publicIp": box.public_ip,
            "homeVolumeId": box.home_volume_id,
            "sshConfig": box.ssh_config,
            "vscode": box.vscode,
            c.OUT_ACCESS_POLICY_ARN: box.access_policy_arn,
        }
    pulumi.export(c.OUT_DEVELOPERS, developers)
    pulumi.export("sshConfig", apply_all(lambda *blocks: "\n".join(blocks), *[d["sshConfig"] for d in developers.values()]))


class WrongAccountError(pulumi.RunError):
    """The credentials belong to another account than the stack config names (shown without traceback)."""


def require_account(expected: str | None) -> None:
    """Refuse to register anything when `devprod:accountId` names another account.

    A plain (blocking) invoke, before the first resource: nothing can be
    created in the wrong account while the answer is pending.
    """
    if expected is None:
        return
    actual = aws.get_caller_identity().account_id
    if actual != expected:
        raise WrongAccountError(
            f"devprod:accountId is {expected}, but the AWS credentials are for account {actual}; "
            "nothing was changed (switch AWS_PROFILE or credentials)"
        )


def build(config: StackConfig) -> None:
    """Register every component the config asks for and export the stack outputs."""
    tags = stack_tags(config)
    require_account(config.account_id)
    if not config.developers and config.production is None and config.ci is None:
        pulumi.export(c.OUT_DEVELOPERS, {})
        return
    account_id = aws.get_caller_identity_output().account_id
    network = Network(
        "network",
        NetworkArgs(spec=config.network, stack=config.stack, region=config.region, account_id=account_id, tags=tags),
    )
    if config.developers:
        _developers(config, network, account_id, tags)
    store, pipeline = None, None
    if config.production is not None:
        store, service = _production(config, network, account_id, tags)
        if config.pipeline is not None:
            pipeline = _pipeline(config, account_id, store, service, tags)
    if config.ci is not None:
        _ci(config, account_id, tags, store, pipeline)


def _ci(config: StackConfig, account_id, tags, store: ArtifactStore | None, pipeline: DeployPipeline | None) -> None:
    settings = config.ci
    assert settings is not None
    provider: pulumi.Input[str] | None = settings.oidc_provider_arn
    opts = None
    if provider is None and pipeline is not None:
        # An account has one GitHub provider and the pipeline creates it; IAM
        # names it after the issuer, so its ARN is known before it exists.
        provider = account_id.apply(github_provider_arn)
        opts = pulumi.ResourceOptions(depends_on=[pipeline])
    ci = CiIdentities(
        "ci",
        CiIdentitiesArgs(
            settings=settings,
            project=config.project,
            region=config.region,
            account_id=account_id,
            oidc_provider_arn=provider,
            stack_buckets={config.stack: [store.bucket_arn]} if store is not None else {},
            tags=tags,
        ),
        opts,
    )
    app = config.pipeline.repository if config.pipeline is not None else None
    pulumi.export(
        "ci",
        {
            "repository": settings.repository,
            "previewRoleArn": ci.preview_role_arn,
            "driftRoleArn": ci.drift_role_arn,
            "upRoleArns": ci.up_role_arns,
            "actionsVariables": actions_variables(config.region, settings.state_bucket, ci, app),
        },
    )


def _production(
    config: StackConfig, network: Network, account_id: pulumi.Output[str], tags: dict[str, str]
) -> tuple[ArtifactStore, ProductionService]:
    assert config.production is not None
    writer = None
    if config.pipeline is not None:
        writer = account_id.apply(lambda a: f"arn:aws:iam::{a}:role/{release_role_name(config.stack)}")
    store = ArtifactStore("artifacts", ArtifactStoreArgs(release_writer_arn=writer, tags=tags))
    service = ProductionService(
        "production",
        ProductionServiceArgs(
            settings=config.production,
            stack=config.stack,
            region=config.region,
            account_id=account_id,
            vpc_id=network.vpc_id,
            subnet_id=network.subnet_ids[config.production_zone],
            host_subnet_ids=[network.subnet_ids[z] for z in config.production_zones],
            balancer_subnet_ids=[network.subnet_ids[z] for z in config.network.zones],
            pipeline_name=config.pipeline.name if config.pipeline is not None else "",
            artifact_bucket=store.bucket_name,
            artifact_bucket_arn=store.bucket_arn,
            tags=tags,
            managed_policies=config.instance_role_policies,
        ),
    )
    pulumi.export(
        c.OUT_PRODUCTION,
        {
            c.OUT_INSTANCE_ID: service.instance_id,
            c.OUT_INSTANCE_IDS: service.instance_ids,
            "publicIp": service.public_ip,
            c.OUT_LOAD_BALANCER_DNS: service.load_balancer_dns,
            c.OUT_DOMAIN: config.production.domain,
            c.OUT_LIVE_RELEASE_PARAMETER: service.live_release_parameter,
            c.OUT_ALARM_NAMES: service.alarm_names,
            c.OUT_TARGET_GROUP: service.target_group_arn,
            c.OUT_APP_PORT: service.port,
            c.OUT_HEALTH_URL: service.health_url,
            c.OUT_DOCUMENT: service.document_name,
            c.OUT_LOG_GROUP: service.log_group_name,
            c.OUT_BUCKET: store.bucket_name,
            "parameterPath": service.parameter_path,
            "parametersKeyArn": service.parameters_key_arn,
            "parametersKeyAlias": service.parameters_key_alias,
            c.OUT_OPERATOR_POLICY_ARN: service.operator_policy_arn,
            c.OUT_REGION: config.region,
        },
    )
    return store, service


def _pipeline(config: StackConfig, account_id, store: ArtifactStore, service: ProductionService, tags) -> DeployPipeline:
    settings = config.pipeline
    assert settings is not None and config.production is not None
    pipeline = DeployPipeline(
        "delivery",
        DeployPipelineArgs(
            settings=settings,
            stack=config.stack,
            region=config.region,
            account_id=account_id,
            artifact_bucket=store.bucket_name,
            artifact_bucket_arn=store.bucket_arn,
            document_name=service.document_name,
            document_arn=service.document_arn,
            target_tags=service.target_tags,
            package_commands=settings.package_commands_for(config.production.runtime),
            log_retention_days=config.production.log_retention_days,
            tags=tags,
            bake_alarms=service.alarm_names,
            live_release_parameter=c.live_release_parameter(config.stack),
            target_group_arn=service.target_group_arn,
            target_port=service.port,
        ),
    )
    if settings.manage_repository:
        # Imported here, not at the top: pulumi_github costs about 0.1 s of CPU to
        # import, a tenth of a small dev stack's whole plan, and only this wires GitHub.
        from components.github_repo import GitHubWiring, GitHubWiringArgs

        GitHubWiring(
            "github",
            GitHubWiringArgs(
                settings=settings,
                region=config.region,
                deploy_role_arn=pipeline.deploy_role_arn,
                pipeline_name=pipeline.pipeline_name,
                source_bucket=store.bucket_name,
            ),
        )
    pulumi.export(
        c.OUT_PIPELINE,
        {
            c.OUT_PIPELINE_NAME: pipeline.pipeline_name,
            "deployRoleArn": pipeline.deploy_role_arn,
            "buildProject": pipeline.build_project,
            "releaseFunction": pipeline.release_function,
            "buildLogGroup": pipeline.build_log_group,
            "releaseLogGroup": pipeline.release_log_group,
            "alertsTopicArn": pipeline.alerts_topic_arn,
            "repository": settings.repository,
            "branch": settings.branch,
        },
    )
    return pipeline


def main() -> None:
    build(load_from_pulumi())
