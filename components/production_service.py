"""ProductionService: the production host (SSM-only), its role, logs, recovery, and the deploy document."""

from __future__ import annotations

import base64
import gzip
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.common import (
    heredoc_body,
    METADATA_OPTIONS,
    egress_anywhere,
    encrypted_root,
    InstanceRoleSpec,
    instance_role,
    key_admin_statement,
    log_writes_statement,
    policy_document,
    script_with_settings,
    tags_for,
)
from components.config import ProductionSettings
from components.load_balancer import HttpsLoadBalancer, HttpsLoadBalancerArgs, target_group_statements
from devprod.contracts import (
    LIVE_RELEASE_UNSET,
    OPERATOR_TAG,
    proxy_metrics_namespace,
    PROXY_REQUESTS,
    PROXY_SERVER_ERRORS,
    PROXY_UNHEALTHY,
    live_release_parameter,
    production_target,
)

REPO = Path(__file__).resolve().parent.parent
DEPLOY_SCRIPT = REPO / "scripts" / "deploy.sh"
USER_DATA_FILE = REPO / "scripts" / "user-data" / "prod.sh"
# nftables table that refuses the instance metadata service to every uid but root.
IMDS_RULESET_FILE = REPO / "scripts" / "host" / "imds-root-only.nft"
# First boot: deploy the live release (read from Parameter Store) before the host is healthy.
FIRST_DEPLOY_FILE = REPO / "scripts" / "host" / "devprod-first-deploy.sh"
# Written by the `freeze` work (issue #15): the proxy's metrics, once a minute.
PROXY_METRICS_FILE = REPO / "scripts" / "host" / "devprod-proxy-metrics.py"
PROXY_METRICS_STATE = "/var/lib/devprod/proxy-metrics.json"
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
APP_DIR = "/srv/app"
APP_USER = "app"
# Root-only: the app user can neither forge nor remove deploy records.
DEPLOY_LOG = "/var/log/devprod/deploys.log"
# The install step (dependency scripts included) runs as APP_USER and is killed after this.
INSTALL_TIMEOUT_SECONDS = 600
# A systemd template: the app runs as SERVICE@blue or SERVICE@green behind nginx.
SERVICE = "devprod-app"
# deploy.sh writes each slot's drop-in (port, start command) under here.
UNIT_DIR = "/etc/systemd/system"
# nginx from the OS package (AL2023 and Ubuntu 24.04 both include conf.d/*.conf
# inside http {} and keep the master's pid in /run/nginx.pid). deploy.sh writes
# the server block and, at each switch, the upstream file.
NGINX_SITE = "/etc/nginx/conf.d/devprod.conf"
NGINX_UPSTREAM = "/etc/nginx/devprod/upstream.conf"
NGINX_ACCESS_LOG = "/var/log/nginx/devprod-access.log"
HEREDOC = "DEVPROD_DEPLOY_SH"
RELEASE_PATTERN = "^([0-9a-f]{7,40})?$"
# The sha256 the host verifies the download against (S26); empty only when the
# release is already on the host (a rollback).
CHECKSUM_PATTERN = "^([0-9a-f]{64})?$"
ACTION_PATTERN = "^(deploy|rollback)$"
# deploy.sh's health deadlines (gate, then through nginx) and drain plus download and
# install; SSM stops the step after this.
DOCUMENT_TIMEOUT_SECONDS = 1800


def deploy_script_text() -> str:
    return heredoc_body(DEPLOY_SCRIPT, HEREDOC)


def document_settings(settings: ProductionSettings, bucket: str, parameter_path: str) -> list[str]:
    """The fixed settings lines of the deploy document (never caller-controlled)."""
    values = {
        "APP_DIR": APP_DIR,
        "APP_USER": APP_USER,
        "SERVICE": SERVICE,
        # Through nginx; the gate probes HEALTH_PATH on the new slot's own port.
        "HEALTH_URL": f"http://127.0.0.1:{settings.port}{settings.health_path}",
        "HEALTH_PATH": settings.health_path,
        "HEALTH_TIMEOUT": str(settings.health_timeout_seconds),
        "KEEP_RELEASES": str(settings.keep_releases),
        "ARTIFACT_BUCKET": bucket,
        "ARTIFACT_PREFIX": "releases",
        "INSTALL_COMMAND": settings.install,
        "INSTALL_TIMEOUT": str(INSTALL_TIMEOUT_SECONDS),
        "PARAMETER_PATH": parameter_path,
        "DEPLOY_LOG": DEPLOY_LOG,
        # The start command, the slots' ports and the proxy settings reach the host at
        # each deploy (deploy.sh writes the drop-ins and nginx's server block), so
        # changing them needs no user-data change on the live host.
        "UNIT_DIR": UNIT_DIR,
        "APP_START_COMMAND": settings.start_command,
        "BLUE_PORT": str(settings.slot_ports[0]),
        "GREEN_PORT": str(settings.slot_ports[1]),
        "DRAIN_TIMEOUT": str(settings.drain_timeout_seconds),
        "PROXY_LISTEN": f"{settings.port} [::]:{settings.port}",
        "MAX_BODY_MB": str(settings.max_body_megabytes),
        "PROXY_TIMEOUT": str(settings.proxy_timeout_seconds),
        "NGINX_SITE": NGINX_SITE,
        "NGINX_UPSTREAM": NGINX_UPSTREAM,
        "ACCESS_LOG": NGINX_ACCESS_LOG,
    }
    return [f"export {key}={shlex.quote(value)}" for key, value in values.items()]


def deploy_document(settings: ProductionSettings, bucket: str, parameter_path: str) -> str:
    """SSM Command document, schema 2.2: parameters arrive only as SSM_* environment variables (S18).

    The script step runs scripts/deploy.sh byte for byte, fed to bash through a
    quoted heredoc, so nothing in it is interpolated by SSM or by a shell.
    """
    run_command = [
        "set -eu",
        *document_settings(settings, bucket, parameter_path),
        'export RELEASE="${SSM_release:-}" ACTION="${SSM_action:-deploy}" CHECKSUM="${SSM_checksum:-}"',
        f"exec bash -s <<'{HEREDOC}'",
        deploy_script_text().rstrip("\n"),
        HEREDOC,
    ]
    document = {
        "schemaVersion": "2.2",
        "description": "devprod: deploy or roll back a release on the production host (scripts/deploy.sh)",
        "parameters": {
            "release": {
                "type": "String",
                "description": "Git sha of the release (for rollback: empty means the previous release)",
                "default": "",
                "allowedPattern": RELEASE_PATTERN,
                "interpolationType": "ENV_VAR",
            },
            "checksum": {
                "type": "String",
                "description": "sha256 of releases/<release>.tar.gz as published (empty: use the release on the host)",
                "default": "",
                "allowedPattern": CHECKSUM_PATTERN,
                "interpolationType": "ENV_VAR",
            },
            "action": {
                "type": "String",
                "description": "deploy or rollback",
                "default": "deploy",
                "allowedValues": ["deploy", "rollback"],
                "allowedPattern": ACTION_PATTERN,
                "interpolationType": "ENV_VAR",
            },
        },
        "mainSteps": [
            {
                "action": "aws:runShellScript",
                "name": "deploy",
                "precondition": {"StringEquals": ["platformType", "Linux"]},
                "inputs": {"timeoutSeconds": DOCUMENT_TIMEOUT_SECONDS, "runCommand": run_command},
            }
        ],
    }
    return json.dumps(document, indent=2)


def packed(text: str) -> str:
    """A repository script for user data, gzip + base64 (deterministic): the host helpers would not
    fit the 16 KB limit (S7) as text. Only fixed repository files are packed; every setting
    (developer- or config-supplied) stays plain text where S7's scan reads it."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode() if text else ""


TOOLS_DIR = "/usr/local/libexec/devprod"


def tools_document() -> str:
    """The host helpers too large for user data (S7's 16 KB), as an SSM Command document: a host
    reads it at first boot (ssm:GetDocument) and runs its step; operators may send it to refresh
    the helpers on live hosts. Its text is repository files only."""
    metrics = PROXY_METRICS_FILE.read_text() if PROXY_METRICS_FILE.exists() else ""
    target = f"{TOOLS_DIR}/devprod-proxy-metrics.py"
    run_command = ["set -eu", f"install -d -m 0755 -o root -g root {TOOLS_DIR}"]
    if metrics:
        run_command += [f"printf '%s' '{packed(metrics)}' | base64 -d | gunzip > {target}.tmp",
                        f"chmod 0755 {target}.tmp", f"mv -f {target}.tmp {target}"]
    return json.dumps({
        "schemaVersion": "2.2",
        "description": "devprod: install the production host's helper scripts (proxy metrics)",
        "mainSteps": [{"action": "aws:runShellScript", "name": "install",
                       "precondition": {"StringEquals": ["platformType", "Linux"]},
                       "inputs": {"timeoutSeconds": 120, "runCommand": run_command}}],
    }, indent=2)


def render_user_data(settings: ProductionSettings, stack: str = "", region: str = "", document: str = "",
                     tools_document_name: str = "") -> str:
    """prod.sh with its settings. `document` is the deploy document's name: the first boot runs it
    with the live release (empty: no first deploy)."""
    # Until every config carries the field: the secure default, metadata for root only.
    uses_role = settings.app_uses_instance_role
    lines = [
        f"APP_USER={APP_USER}",
        f"APP_DIR={APP_DIR}",
        f"SERVICE={SERVICE}",
        f"PORT={settings.port}",
        f"RUNTIME={shlex.quote(settings.runtime.value)}",
        f"START_COMMAND={shlex.quote(settings.start_command)}",
        f"SLOT_PORTS={shlex.quote(' '.join(str(p) for p in settings.slot_ports))}",
        f"NGINX_UPSTREAM={NGINX_UPSTREAM}",
        f"DEPLOY_LOG={DEPLOY_LOG}",
        f"APP_USES_INSTANCE_ROLE={'yes' if uses_role else 'no'}",
        f"IMDS_RULESET={shlex.quote(IMDS_RULESET_FILE.read_text())}",
        f"STACK={shlex.quote(stack)}",
        f"REGION={shlex.quote(region)}",
        f"LIVE_RELEASE_PARAMETER={shlex.quote(live_release_parameter(stack))}",
        f"DOCUMENT={shlex.quote(document)}",
        f"HEALTH_PATH={shlex.quote(settings.health_path)}",
        f"FIRST_DEPLOY={packed(FIRST_DEPLOY_FILE.read_text())}",
        f"TOOLS_DOCUMENT={shlex.quote(tools_document_name)}",
        f"PROXY_METRICS_STATE={PROXY_METRICS_STATE}",
        f"ACCESS_LOG={NGINX_ACCESS_LOG}",
    ]
    return script_with_settings(USER_DATA_FILE, lines, "ProductionService")


def parameter_arn(region: str, account: str, path: str) -> str:
    """The ARN of a Parameter Store path (no trailing slash), as IAM and KMS see it."""
    return f"arn:aws:ssm:{region}:{account}:parameter{path.rstrip('/')}"


def app_parameters_key_policy(region: str, account: str, role_arn: str, path: str) -> str:
    """S22: anyone in the account may store app secrets through SSM; only the production role reads them.

    The decrypt grant is narrowed to calls SSM makes for parameters under the
    app's path (the encryption context SSM sends names the parameter).
    """
    via_ssm = {"kms:ViaService": f"ssm.{region}.amazonaws.com"}
    return policy_document(
        [
            key_admin_statement(account),
            {
                "Sid": "AccountStoresAppSecretsThroughSsm",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {"StringEquals": via_ssm},
            },
            {
                "Sid": "OnlyProductionReadsAppSecrets",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": via_ssm,
                    "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": f"{parameter_arn(region, account, path)}/*"},
                },
            },
        ]
    )


def production_access_statements(
    region: str, bucket_arn: str, parameters_arn: str, key_arn: str, log_group_arn: str,
    instance_arns: str | Sequence[str], live_release_arn: str = "", document_arn: str | Sequence[str] = "",
    metrics_namespace: str = "",
) -> list[dict[str, Any]]:
    """S17/S22: its releases, its own parameter path (decrypted through SSM with its key), its deploy log.

    The secrets are read only from the production instances themselves: someone who
    can pass this role to another instance still gets no parameter. Issue #15
    adds what a first boot needs (the live release and the deploy document's
    text, both from the hosts only) and the proxy metrics (one namespace).
    """
    instance_arn = instance_arns if isinstance(instance_arns, str) else list(instance_arns)
    if isinstance(instance_arn, list) and len(instance_arn) == 1:
        instance_arn = instance_arn[0]
    from_hosts = {"ArnEquals": {"ec2:SourceInstanceARN": instance_arn}}
    first_boot: list[dict[str, Any]] = []
    if live_release_arn and document_arn:
        first_boot = [
            {"Sid": "ReadLiveRelease", "Effect": "Allow", "Action": "ssm:GetParameter",
             "Resource": live_release_arn, "Condition": from_hosts},
            {"Sid": "ReadDeployDocument", "Effect": "Allow", "Action": "ssm:GetDocument",
             "Resource": document_arn if isinstance(document_arn, str) else list(document_arn),
             "Condition": from_hosts},
            # PutMetricData has no resource scope: this stack's namespace, from its hosts, is the limit.
            {"Sid": "PublishProxyMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
             "Resource": "*", "Condition": {"StringEquals": {"cloudwatch:namespace": metrics_namespace}, **from_hosts}},
        ]
    return [
        {"Sid": "ReadReleases", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/releases/*"},
        {
            "Sid": "ReadOwnParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"],
            "Resource": [parameters_arn, f"{parameters_arn}/*"],
            "Condition": {"ArnEquals": {"ec2:SourceInstanceARN": instance_arn}},
        },
        {
            "Sid": "DecryptOwnParameters",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"ssm.{region}.amazonaws.com"}},
        },
        log_writes_statement("WriteDeployLog", log_group_arn, describe_streams=True),
        *first_boot,
    ]


# The shell document Session Manager uses when none is named: operators get a
# shell on the host, not SSH (production has no key and no port 22, S4).
OPERATOR_SESSION_DOCUMENT = "SSM-SessionManagerRunShell"
OPERATOR_READS = ("ec2:DescribeInstances", "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation",
                  "ssm:ListCommandInvocations", "ssm:ListCommands")


def operator_access_statements(
    region: str, account: str, stack: str, instance_arn: str | Sequence[str], document_arn: str, log_group_arn: str,
    bucket_arn: str, pipeline_name: str = "", with_release: bool = False, target_group_arn: str | None = None,
) -> list[dict[str, Any]]:
    """S29, second half: sessions on this stack's production host, the deploy document sent to it, its
    deploy log and published releases read (what `devprod deploy/rollback/logs` need); nothing on dev boxes.

    The host is named by ARN and, in depth, by the production tags (S16's
    target): a developer box never carries devprod:role=production.
    """
    on_production = {f"ssm:resourceTag/{k}": v for k, v in production_target(stack).items()}
    if not isinstance(instance_arn, str):
        hosts = list(instance_arn)
        instance_arn = hosts[0] if len(hosts) == 1 else hosts  # type: ignore[assignment]
    send_to = [document_arn, *(instance_arn if isinstance(instance_arn, list) else [instance_arn])]
    return [
        {"Sid": "SessionsOnProduction", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": instance_arn,
         "Condition": {"StringEquals": on_production, "BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}},
        {"Sid": "SessionDocument", "Effect": "Allow", "Action": "ssm:StartSession",
         "Resource": f"arn:aws:ssm:{region}:{account}:document/{OPERATOR_SESSION_DOCUMENT}"},
        {"Sid": "OwnSessionsOnly", "Effect": "Allow", "Action": "ssm:TerminateSession",
         "Resource": f"arn:aws:ssm:{region}:{account}:session/${{aws:username}}-*"},
        {"Sid": "OwnSessionsOnlyFederated", "Effect": "Allow", "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
         "Resource": f"arn:aws:ssm:{region}:{account}:session/*",
         "Condition": {"StringLike": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}},
        # The deploy document carries the production tags too, so one condition covers both (as S16's Release role).
        {"Sid": "SendDeployDocumentToProduction", "Effect": "Allow", "Action": "ssm:SendCommand",
         "Resource": send_to, "Condition": {"StringEquals": on_production}},
        # IAM offers no resource scope for these reads.
        {"Sid": "FollowDeploys", "Effect": "Allow", "Action": list(OPERATOR_READS), "Resource": "*"},
        {"Sid": "ReadDeployLog", "Effect": "Allow",
         "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents"],
         "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"]},
        {"Sid": "ListReleases", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": ["releases/*"]}}},
        {"Sid": "ReadReleases", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/releases/*"},
        *(release_operator_statements(region, account, stack, pipeline_name) if with_release else []),
        *(target_group_statements(target_group_arn) if with_release else []),
    ]



# What `devprod deploy/rollback` (the live release) and `devprod freeze` (the Bake
# stage's transition) add to S29's operators; the pipeline is this stack's only.
OPERATOR_PIPELINE_ACTIONS = ("codepipeline:DisableStageTransition", "codepipeline:EnableStageTransition",
                             "codepipeline:GetPipelineState")
OPERATOR_RELEASE_ACTIONS = ("ssm:GetParameter", "ssm:PutParameter")


def release_operator_statements(region: str, account: str, stack: str, pipeline_name: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = [
        {"Sid": "LiveRelease", "Effect": "Allow", "Action": list(OPERATOR_RELEASE_ACTIONS),
         "Resource": parameter_arn(region, account, live_release_parameter(stack))},
        # IAM offers no resource scope for Describe* on load balancers.
        {"Sid": "HostHealth", "Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetHealth",
         "Resource": "*"},
    ]
    if pipeline_name:
        pipeline = f"arn:aws:codepipeline:{region}:{account}:{pipeline_name}"
        # Transitions are scoped by stage (pipeline/stage): only the way into Release
        # (devprod.freeze.FROZEN_STAGE); the state read by pipeline.
        statements += [
            {"Sid": "FreezePipeline", "Effect": "Allow", "Action": list(OPERATOR_PIPELINE_ACTIONS[:2]),
             "Resource": f"{pipeline}/Release"},
            {"Sid": "ReadPipelineState", "Effect": "Allow", "Action": OPERATOR_PIPELINE_ACTIONS[2],
             "Resource": pipeline},
        ]
    return statements


@dataclass(frozen=True)
class ProductionServiceArgs:
    settings: ProductionSettings
    stack: str
    region: str
    account_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    artifact_bucket: pulumi.Input[str]
    artifact_bucket_arn: pulumi.Input[str]
    tags: Mapping[str, str] = field(default_factory=dict)
    # Managed policies the stack config allows on instance roles (none by default).
    managed_policies: tuple[str, ...] = ()
    # Each host's subnet, host 1 first (empty: one host in subnet_id).
    host_subnet_ids: Sequence[pulumi.Input[str]] = ()
    # The load balancer's subnets: one in each of the network's zones.
    balancer_subnet_ids: Sequence[pulumi.Input[str]] = ()
    # The deploy pipeline's name (configured), for operators' `devprod freeze`; empty: no pipeline.
    pipeline_name: str = ""


class ProductionService(pulumi.ComponentResource):
    """The hosts serving the app (one by default; more behind an HTTPS load balancer); no key pair,
    no SSH, termination-protected; deployed through SSM."""

    instance_id: pulumi.Output[str]
    instance_ids: list[pulumi.Output[str]]
    public_ip: pulumi.Output[str]
    health_url: pulumi.Output[str]
    load_balancer_dns: pulumi.Output[str] | None
    # The ALB target group the hosts are registered in on `port` (None without a balancer):
    # a rollout takes each batch out of it while the batch switches (devprod.rollout).
    target_group_arn: pulumi.Output[str] | None
    port: int
    document_name: pulumi.Output[str]
    document_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    parameters_key_arn: pulumi.Output[str]
    # The managed policy to attach to operators' IAM identities (S29).
    operator_policy_arn: pulumi.Output[str]
    # What the pipeline's Bake stage watches (issue #15).
    alarm_names: list[pulumi.Output[str]]
    live_release_parameter: str
    parameters_key_alias: str
    parameter_path: str
    target_tags: dict[str, str]

    def __init__(self, name: str, args: ProductionServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:compute:ProductionService", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # The pipeline and `devprod deploy` target instances by these tags (S16).
        self.target_tags = production_target(args.stack)
        base_tags = {**args.tags, **self.target_tags}
        self.parameter_path = f"/devprod/{args.stack}/app/"
        self.parameters_key_alias = f"alias/devprod-{args.stack}-app-parameters"

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-deploy-logs",
            name=f"/devprod/{args.stack}/deploy",
            retention_in_days=settings.log_retention_days,
            tags=tags_for(base_tags, f"{name}-deploy-logs"),
            opts=child,
        )
        role, profile = instance_role(
            self,
            name,
            "devprod production host: SSM agent, its releases, its parameters, its deploy log",
            base_tags,
            InstanceRoleSpec(region=args.region, account_id=args.account_id, managed_policies=args.managed_policies),
        )
        key = self._parameters_key(name, args, role.arn, base_tags)
        live = self._live_release(name, args, base_tags)
        document = self._deploy_document(name, args, base_tags)
        tools = aws.ssm.Document(
            f"{name}-host-tools", document_type="Command", document_format="JSON", content=tools_document(),
            tags=tags_for(base_tags, f"{name}-host-tools"), opts=child)
        balancer = self._balancer(name, args) if settings.load_balanced else None
        hosts = self._hosts(name, args, profile, document, tools, balancer, base_tags)
        # After the hosts: the parameter reads are bound to their ARNs (deploys and first boots read them).
        self._access_policy(name, args, role, key, log_group, [h for h, _ in hosts], live, [document, tools])
        self.operator_policy_arn = self._operator_policy(
            name, args, [h for h, _ in hosts], document, log_group, balancer, base_tags).arn
        self.alarm_names = self._bake_alarms(name, args, balancer, base_tags)
        self._publish(hosts, balancer, document, log_group, key, settings)

    def _live_release(self, name: str, args: ProductionServiceArgs, tags: Mapping[str, str]) -> aws.ssm.Parameter:
        """The release every host should serve; the Release function and the CLI write it (not Pulumi)."""
        self.live_release_parameter = live_release_parameter(args.stack)
        return aws.ssm.Parameter(
            f"{name}-live-release",
            name=self.live_release_parameter,
            type="String",
            value=LIVE_RELEASE_UNSET,
            description=f"devprod {args.stack}: '<sha> <sha256>' of the release production serves (or none)",
            tags=tags_for(tags, f"{name}-live-release"),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["value"]),
        )

    def _balancer(self, name: str, args: ProductionServiceArgs) -> HttpsLoadBalancer:
        settings = args.settings
        assert settings.domain is not None
        return HttpsLoadBalancer(
            f"{name}-lb",
            HttpsLoadBalancerArgs(
                stack=args.stack,
                vpc_id=args.vpc_id,
                subnet_ids=list(args.balancer_subnet_ids),
                allowed_cidrs=settings.allowed_cidrs,
                app_port=settings.port,
                health_path=settings.health_path,
                drain_seconds=settings.drain_timeout_seconds,
                domain=settings.domain,
                hosted_zone_id=settings.hosted_zone_id,
                certificate_arn=settings.certificate_arn,
                tags=args.tags,
            ),
            pulumi.ResourceOptions(parent=self),
        )

    def _operator_policy(self, name: str, args: ProductionServiceArgs, instances: list[aws.ec2.Instance],
                         document: aws.ssm.Document, log_group: aws.cloudwatch.LogGroup,
                         balancer: HttpsLoadBalancer | None, tags: Mapping[str, str]) -> aws.iam.Policy:
        """S29: the managed policy operators' IAM identities get: production only, never a dev box."""
        target_group = balancer.target_group_arn if balancer is not None else None
        return aws.iam.Policy(
            f"{name}-operators",
            description=f"devprod {args.stack}: sessions on the production host, its deploy document, its deploy log",
            policy=pulumi.Output.all(args.account_id, pulumi.Output.all(*[i.arn for i in instances]), document.arn,
                                     log_group.arn, args.artifact_bucket_arn, target_group).apply(
                lambda a: policy_document(operator_access_statements(
                    args.region, a[0], args.stack, *a[1:5], pipeline_name=args.pipeline_name, with_release=True,
                    target_group_arn=a[5]))
            ),
            tags=tags_for(tags, f"{name}-operators", **{OPERATOR_TAG: args.stack}),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _access_policy(
        self,
        name: str,
        args: ProductionServiceArgs,
        role: aws.iam.Role,
        key: aws.kms.Key,
        log_group: aws.cloudwatch.LogGroup,
        instances: list[aws.ec2.Instance],
        live: aws.ssm.Parameter,
        documents: list[aws.ssm.Document],
    ) -> aws.iam.RolePolicy:
        """What the hosts may do beyond the SSM agent: releases, parameters and first boot (from themselves), log."""
        return aws.iam.RolePolicy(
            f"{name}-access",
            role=role.id,
            policy=pulumi.Output.all(args.account_id, args.artifact_bucket_arn, key.arn, log_group.arn,
                                     pulumi.Output.all(*[i.arn for i in instances]),
                                     pulumi.Output.all(*[d.arn for d in documents])).apply(
                lambda a: policy_document(
                    production_access_statements(
                        args.region, a[1], parameter_arn(args.region, a[0], self.parameter_path), a[2], a[3], a[4],
                        parameter_arn(args.region, a[0], self.live_release_parameter), a[5],
                        proxy_metrics_namespace(args.stack),
                    )
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _deploy_document(self, name: str, args: ProductionServiceArgs, tags: Mapping[str, str]) -> aws.ssm.Document:
        """The SSM Command document carrying deploy.sh: the only way a release reaches the host."""
        return aws.ssm.Document(
            f"{name}-deploy",
            document_type="Command",
            document_format="JSON",
            content=pulumi.Output.from_input(args.artifact_bucket).apply(
                lambda bucket: deploy_document(args.settings, bucket, self.parameter_path)
            ),
            tags=tags_for(tags, f"{name}-deploy"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _publish(
        self,
        hosts: list[tuple[aws.ec2.Instance, aws.ec2.Eip | None]],
        balancer: HttpsLoadBalancer | None,
        document: aws.ssm.Document,
        log_group: aws.cloudwatch.LogGroup,
        key: aws.kms.Key,
        settings: ProductionSettings,
    ) -> None:
        first, eip = hosts[0]
        self.instance_id = first.id
        self.instance_ids = [host.id for host, _ in hosts]
        # Behind a load balancer the hosts have no fixed address (only SSM's egress uses theirs).
        self.public_ip = eip.public_ip if eip is not None else first.public_ip
        if balancer is not None:
            self.health_url = pulumi.Output.from_input(f"https://{settings.domain}{settings.health_path}")
            self.load_balancer_dns = balancer.dns_name
            self.target_group_arn = balancer.target_group_arn
        else:
            self.health_url = eip.public_ip.apply(  # type: ignore[union-attr]
                lambda ip: f"http://{ip}:{settings.port}{settings.health_path}")
            self.load_balancer_dns = None
            self.target_group_arn = None
        self.port = settings.port
        self.document_name = document.name
        self.document_arn = document.arn
        self.log_group_name = log_group.name
        self.parameters_key_arn = key.arn
        self.register_outputs(
            {
                "instanceId": self.instance_id,
                "instanceIds": self.instance_ids,
                "publicIp": self.public_ip,
                "healthUrl": self.health_url,
                "documentName": self.document_name,
                "logGroupName": self.log_group_name,
                "parametersKeyArn": self.parameters_key_arn,
                "operatorPolicyArn": self.operator_policy_arn,
                "alarmNames": self.alarm_names,
            }
        )

    def _parameters_key(
        self, name: str, args: ProductionServiceArgs, role_arn: pulumi.Output[str], tags: Mapping[str, str]
    ) -> aws.kms.Key:
        """The customer-managed key for the app's SecureString parameters (S22), and its alias."""
        child = pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(
            f"{name}-parameters-key",
            description=f"devprod {args.stack}: the app's SecureString parameters under {self.parameter_path}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(args.account_id, role_arn).apply(
                lambda a: app_parameters_key_policy(args.region, a[0], a[1], self.parameter_path)
            ),
            tags=tags_for(tags, f"{name}-parameters-key", **{"devprod:purpose": "app-parameters"}),
            opts=child,
        )
        aws.kms.Alias(f"{name}-parameters-key-alias", name=self.parameters_key_alias, target_key_id=key.key_id, opts=child)
        return key

    def _hosts(
        self, name: str, args: ProductionServiceArgs, profile: aws.iam.InstanceProfile, document: aws.ssm.Document,
        tools: aws.ssm.Document, balancer: HttpsLoadBalancer | None, tags: Mapping[str, str],
    ) -> list[tuple[aws.ec2.Instance, aws.ec2.Eip | None]]:
        """Host 1 keeps the one-host names (production-host, -eip, -sg, ...); host N is {name}-host-N."""
        settings = args.settings
        group = self._security_group(name, args, balancer, tags)
        # R1: the image changes only when the config names a new one. User data
        # is first-boot only; changing it in place would stop and start the
        # live host, so it is ignored (port and start command travel with deploys).
        if settings.ami:
            ami: pulumi.Input[str] = settings.ami
            ignore = ["userData"]
        else:
            ami = aws.ssm.get_parameter_output(name=AMI_PARAMETER, opts=pulumi.InvokeOutputOptions(parent=self)).value
            ignore = ["ami", "userData"]
        user_data = pulumi.Output.all(document.name, tools.name).apply(
            lambda names: render_user_data(settings, args.stack, args.region, names[0], names[1]))
        subnets = list(args.host_subnet_ids) or [args.subnet_id]
        hosts: list[tuple[aws.ec2.Instance, aws.ec2.Eip | None]] = []
        for number, subnet in enumerate(subnets, start=1):
            host_name = f"{name}-host" if number == 1 else f"{name}-host-{number}"
            instance = aws.ec2.Instance(
                host_name,
                ami=ami,
                instance_type=settings.instance_type,
                subnet_id=subnet,
                vpc_security_group_ids=[group.id],
                iam_instance_profile=profile.name,
                # Also behind the load balancer: the SSM agent and package mirrors need egress
                # (no NAT gateway); the group admits nothing from the internet then.
                associate_public_ip_address=True,
                disable_api_termination=True,
                metadata_options=METADATA_OPTIONS,
                root_block_device=encrypted_root(settings.root_volume_gib),
                user_data=user_data,
                user_data_replace_on_change=False,
                tags=tags_for(tags, host_name),
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignore),
            )
            eip = None
            if balancer is None:
                eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", instance=instance.id,
                                  tags=tags_for(tags, f"{name}-eip"), opts=pulumi.ResourceOptions(parent=self))
            else:
                balancer.attach(host_name, instance.id, settings.port)
            # Host 1's alarm keeps its one-host name.
            self._recovery_alarm(name if number == 1 else f"{name}-host-{number}", args.region, instance, tags)
            hosts.append((instance, eip))
        return hosts

    def _security_group(self, name: str, args: ProductionServiceArgs, balancer: HttpsLoadBalancer | None,
                        tags: Mapping[str, str]) -> aws.ec2.SecurityGroup:
        """The app port to the allowed CIDRs (or, behind a load balancer, to its group only), nothing else:
        administration is through SSM (S5)."""
        settings = args.settings
        rule: dict[str, Any] = {"protocol": "tcp", "from_port": settings.port, "to_port": settings.port}
        if balancer is None:
            rule.update(description=f"App port {settings.port}",
                        cidr_blocks=[c for c in settings.allowed_cidrs if ":" not in c],
                        ipv6_cidr_blocks=[c for c in settings.allowed_cidrs if ":" in c])
        else:
            rule.update(description=f"App port {settings.port} from the load balancer only",
                        security_groups=[balancer.security_group_id])
        return aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="devprod production: the app port only; administration through SSM",
            vpc_id=args.vpc_id,
            ingress=[rule],
            egress=egress_anywhere("Outbound for SSM, S3 and package mirrors"),
            tags=tags_for(tags, f"{name}-sg"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _recovery_alarm(self, name: str, region: str, instance: aws.ec2.Instance, tags: Mapping[str, str]) -> None:
        """Recovers the host onto new hardware when AWS's system status check fails."""
        child = pulumi.ResourceOptions(parent=self)
        aws.cloudwatch.MetricAlarm(
            f"{name}-auto-recover",
            alarm_description="Recovers the production host when the underlying hardware fails",
            namespace="AWS/EC2",
            metric_name="StatusCheckFailed_System",
            dimensions={"InstanceId": instance.id},
            statistic="Maximum",
            period=60,
            evaluation_periods=2,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            alarm_actions=[f"arn:aws:automate:{region}:ec2:recover"],
            tags=tags_for(tags, f"{name}-auto-recover"),
            opts=child,
        )

    def _bake_alarms(self, name: str, args: ProductionServiceArgs, balancer: HttpsLoadBalancer | None,
                     tags: Mapping[str, str]) -> list[pulumi.Output[str]]:
        """What the pipeline's Bake stage watches: the 5xx rate and unhealthy hosts, from the load
        balancer when there is one, else from the hosts' proxy metrics. No data is not a failure
        (a quiet minute has no requests)."""
        child = pulumi.ResourceOptions(parent=self)
        common: dict[str, Any] = {"evaluation_periods": BAKE_EVALUATION_PERIODS, "treat_missing_data": "notBreaching"}
        if balancer is not None:
            lb = {"LoadBalancer": balancer.arn_suffix}
            errors = _rate_queries("AWS/ApplicationELB", lb, ["HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"],
                                   "RequestCount")
            unhealthy: dict[str, Any] = {
                "namespace": "AWS/ApplicationELB", "metric_name": "UnHealthyHostCount", "statistic": "Maximum",
                "period": 60, "threshold": 0, "comparison_operator": "GreaterThanThreshold",
                "dimensions": {**lb, "TargetGroup": balancer.target_group_arn_suffix}}
        else:
            stack = {"Stack": args.stack}
            namespace = proxy_metrics_namespace(args.stack)
            errors = _rate_queries(namespace, stack, [PROXY_SERVER_ERRORS], PROXY_REQUESTS)
            unhealthy = {
                "namespace": namespace, "metric_name": PROXY_UNHEALTHY, "statistic": "Maximum",
                "period": 60, "threshold": 1, "comparison_operator": "GreaterThanOrEqualToThreshold",
                "dimensions": stack}
        error_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-5xx-rate",
            name=f"devprod-{args.stack}-production-5xx-rate",
            alarm_description=f"More than {BAKE_ERROR_RATE_PERCENT}% of production's requests answered 5xx",
            metric_queries=errors, threshold=BAKE_ERROR_RATE_PERCENT, comparison_operator="GreaterThanThreshold",
            tags=tags_for(tags, f"{name}-5xx-rate"), opts=child, **common)
        unhealthy_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-unhealthy-hosts",
            name=f"devprod-{args.stack}-production-unhealthy-hosts",
            alarm_description="A production host fails its health check",
            tags=tags_for(tags, f"{name}-unhealthy-hosts"), opts=child, **unhealthy, **common)
        return [error_alarm.name, unhealthy_alarm.name]


# The Bake stage's alarms: over 5 % of requests failing for two minutes in a row.
BAKE_ERROR_RATE_PERCENT = 5
BAKE_EVALUATION_PERIODS = 2


def _rate_queries(namespace: str, dimensions: Mapping[str, Any], errors: list[str],
                  requests: str) -> list[dict[str, Any]]:
    """Metric math: 100 * sum(errors) / requests, per minute (no requests: no datapoint)."""
    def metric(query_id: str, metric_name: str) -> dict[str, Any]:
        return {"id": query_id, "return_data": False, "metric": {
            "namespace": namespace, "metric_name": metric_name, "dimensions": dict(dimensions),
            "period": 60, "stat": "Sum"}}
    ids = [f"e{i}" for i in range(len(errors))]
    total = " + ".join(f"FILL({i}, 0)" for i in ids)
    return [
        *[metric(i, m) for i, m in zip(ids, errors)],
        metric("requests", requests),
        {"id": "rate", "label": "5xx percent", "return_data": True,
         "expression": f"IF(requests > 0, 100 * ({total}) / requests)"},
    ]
