"""DeployPipeline: GitHub OIDC role, CodePipeline V2 (Source -> Build -> Deploy), CodeBuild, failure alerts."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pulumi
import pulumi_aws as aws
from ruamel.yaml import YAML

from components.common import (
    heredoc_body,
    key_admin_statement,
    policy_document,
    read_text,
    service_trust_policy,
    tags_for,
)
from components.config import PipelineSettings

REPO = Path(__file__).resolve().parent.parent
BUILD_SPEC = REPO / "scripts" / "buildspec" / "build.yml"
DEPLOY_SPEC = REPO / "scripts" / "buildspec" / "deploy.yml"
SSM_DEPLOY = REPO / "scripts" / "ssm-deploy.sh"
PLACEHOLDER = "SSM_DEPLOY_SCRIPT"
HEREDOC = "DEVPROD_SSM_DEPLOY"
GITHUB_ISSUER = "token.actions.githubusercontent.com"
SOURCE_KEY = "source/app.zip"
DEPLOY_TIMEOUT_SECONDS = 2100  # longer than the document's 1800 s


def build_spec() -> str:
    return read_text(BUILD_SPEC)


def deploy_spec() -> str:
    """deploy.yml with its placeholder command replaced by a heredoc carrying ssm-deploy.sh verbatim."""
    script = heredoc_body(SSM_DEPLOY, HEREDOC)
    yaml = YAML()
    yaml.width = 4096
    spec = yaml.load(read_text(DEPLOY_SPEC))
    commands = spec["phases"]["build"]["commands"]
    index = commands.index(PLACEHOLDER)
    commands[index] = f"cat >/tmp/ssm-deploy.sh <<'{HEREDOC}'\n{script}{HEREDOC}\n"
    out = io.StringIO()
    yaml.dump(spec, out)
    return out.getvalue()


def github_trust_policy(provider_arn: str, repository: str, environment: str) -> str:
    """S14, S27: only jobs of `repository` running in its GitHub `environment` may assume the role.

    A branch subject would let any workflow on that branch with `id-token:
    write` deploy; an environment restricted to the protected branch (created
    by GitHubWiring) is the one gate every deploying job must pass.
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{GITHUB_ISSUER}:aud": "sts.amazonaws.com",
                            f"{GITHUB_ISSUER}:sub": f"repo:{repository}:environment:{environment}",
                        }
                    },
                }
            ],
        }
    )


def alerts_key_policy(region: str, account: str) -> str:
    """S24: EventBridge may encrypt what it publishes to the alerts topic; the account administers the key."""
    return policy_document(
        [
            key_admin_statement(account),
            {
                "Sid": "EventBridgePublishesAlerts",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
                "Resource": "*",
            },
            {
                # Operators may publish a test alert through SNS.
                "Sid": "AccountPublishesThroughSns",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}},
            },
        ]
    )


@dataclass(frozen=True)
class DeployPipelineArgs:
    settings: PipelineSettings
    stack: str
    region: str
    account_id: pulumi.Input[str]
    artifact_bucket: pulumi.Input[str]
    artifact_bucket_arn: pulumi.Input[str]
    document_name: pulumi.Input[str]
    document_arn: pulumi.Input[str]
    log_retention_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)


class DeployPipeline(pulumi.ComponentResource):
    pipeline_name: pulumi.Output[str]
    pipeline_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]
    build_project: pulumi.Output[str]
    deploy_project: pulumi.Output[str]
    build_log_group: pulumi.Output[str]
    alerts_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: DeployPipelineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:delivery:DeployPipeline", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        account = pulumi.Output.from_input(args.account_id)
        # CodePipeline keeps stage artifacts under the first 20 characters of its name.
        artifacts = f"{s.name[:20]}/*"

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-build-logs",
            name=f"/devprod/{args.stack}/codebuild",
            retention_in_days=args.log_retention_days,
            tags=tags_for(tags, f"{name}-build-logs"),
            opts=child,
        )
        # The build runs the repository's code: it gets a log group of its own,
        # so it can neither forge nor erase what the deploy stage reports.
        deploy_log_group = aws.cloudwatch.LogGroup(
            f"{name}-deploy-stage-logs",
            name=f"/devprod/{args.stack}/codebuild-deploy",
            retention_in_days=args.log_retention_days,
            tags=tags_for(tags, f"{name}-deploy-stage-logs"),
            opts=child,
        )

        # -------------------------------------------------------------- CodeBuild
        build_role = self._codebuild_role(
            f"{name}-build-role",
            account,
            log_group.arn,
            pulumi.Output.from_input(args.artifact_bucket_arn).apply(
                lambda b: [
                    {"Sid": "ReadPipelineArtifacts", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"{b}/{artifacts}"},
                    {"Sid": "PublishReleases", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{b}/releases/*"},
                ]
            ),
            tags,
        )
        instance_arn = account.apply(lambda a: f"arn:aws:ec2:{args.region}:{a}:instance/*")
        deploy_role = self._codebuild_role(
            f"{name}-deploy-role",
            account,
            deploy_log_group.arn,
            pulumi.Output.all(args.artifact_bucket_arn, args.document_arn, instance_arn).apply(
                lambda a: [
                    {"Sid": "ReadPipelineArtifacts", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"{a[0]}/{artifacts}"},
                    # S16: the deploy document only, on instances of this stack's production.
                    # The document carries the same tags, so one tag condition covers both.
                    {
                        "Sid": "SendDeployDocumentToProduction",
                        "Effect": "Allow",
                        "Action": "ssm:SendCommand",
                        "Resource": [a[1], a[2]],
                        "Condition": {
                            "StringEquals": {
                                "ssm:resourceTag/devprod:stack": args.stack,
                                "ssm:resourceTag/devprod:role": "production",
                            }
                        },
                    },
                    # These actions have no resource-level permissions in IAM.
                    # CancelCommand stops a deploy the stage gave up waiting for.
                    {
                        "Sid": "FollowCommands",
                        "Effect": "Allow",
                        "Action": [
                            "ssm:GetCommandInvocation",
                            "ssm:ListCommandInvocations",
                            "ssm:CancelCommand",
                            "ec2:DescribeInstances",
                        ],
                        "Resource": "*",
                    },
                ]
            ),
            tags,
        )
        environment_common = {
            "compute_type": "BUILD_GENERAL1_SMALL",
            "image": s.build_image,
            "type": "LINUX_CONTAINER",
            "privileged_mode": False,
        }
        def logs(group: aws.cloudwatch.LogGroup) -> dict[str, Any]:
            return {"cloudwatch_logs": {"status": "ENABLED", "group_name": group.name}}
        build = aws.codebuild.Project(
            f"{name}-build",
            description=f"devprod: test {s.repository} and publish releases/<sha>.tar.gz",
            service_role=build_role.arn,
            build_timeout=s.build_timeout_minutes,
            source={"type": "CODEPIPELINE", "buildspec": build_spec()},
            artifacts={"type": "CODEPIPELINE"},
            environment={
                **environment_common,
                "environment_variables": [
                    {"name": "ARTIFACT_BUCKET", "value": args.artifact_bucket, "type": "PLAINTEXT"},
                    {"name": "TEST_COMMANDS", "value": "\n".join(s.test_commands), "type": "PLAINTEXT"},
                ],
            },
            logs_config=logs(log_group),
            tags=tags_for(tags, f"{name}-build"),
            opts=child,
        )
        deploy = aws.codebuild.Project(
            f"{name}-deploy",
            description="devprod: run the deploy SSM document on production and wait for it",
            service_role=deploy_role.arn,
            build_timeout=max(5, DEPLOY_TIMEOUT_SECONDS // 60 + 5),
            source={"type": "CODEPIPELINE", "buildspec": deploy_spec()},
            artifacts={"type": "CODEPIPELINE"},
            environment={
                **environment_common,
                "environment_variables": [
                    {"name": "DOCUMENT_NAME", "value": args.document_name, "type": "PLAINTEXT"},
                    {"name": "TARGET_STACK", "value": args.stack, "type": "PLAINTEXT"},
                    # The host's command output goes to the production service's group.
                    {"name": "LOG_GROUP", "value": f"/devprod/{args.stack}/deploy", "type": "PLAINTEXT"},
                    {"name": "DEPLOY_TIMEOUT", "value": str(DEPLOY_TIMEOUT_SECONDS), "type": "PLAINTEXT"},
                ],
            },
            logs_config=logs(deploy_log_group),
            tags=tags_for(tags, f"{name}-deploy"),
            opts=child,
        )

        # ------------------------------------------------------------ CodePipeline
        pipeline_role = aws.iam.Role(
            f"{name}-pipeline-role",
            assume_role_policy=service_trust_policy("codepipeline.amazonaws.com", args.account_id),
            description=f"CodePipeline {s.name}",
            tags=tags_for(tags, f"{name}-pipeline-role"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-pipeline-policy",
            role=pipeline_role.id,
            policy=pulumi.Output.all(args.artifact_bucket_arn, build.arn, deploy.arn).apply(
                lambda a: policy_document(
                    [
                        {
                            "Sid": "ReadSource",
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                            "Resource": f"{a[0]}/{SOURCE_KEY}",
                        },
                        {"Sid": "SourceBucketState", "Effect": "Allow", "Action": "s3:GetBucketVersioning", "Resource": a[0]},
                        {
                            "Sid": "PipelineArtifacts",
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
                            "Resource": f"{a[0]}/{artifacts}",
                        },
                        {
                            "Sid": "RunBuilds",
                            "Effect": "Allow",
                            "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                            "Resource": [a[1], a[2]],
                        },
                    ]
                )
            ),
            opts=child,
        )
        commit_variable = json.dumps([{"name": "COMMIT_SHA", "value": "#{variables.COMMIT_SHA}", "type": "PLAINTEXT"}])
        pipeline = aws.codepipeline.Pipeline(
            f"{name}-pipeline",
            name=s.name,
            pipeline_type="V2",
            execution_mode="QUEUED",
            role_arn=pipeline_role.arn,
            artifact_stores=[{"location": args.artifact_bucket, "type": "S3"}],
            # The only variable: the commit. It picks what is deployed (checked by
            # pattern in the buildspec and the document), never where (S11).
            variables=[{"name": "COMMIT_SHA", "default_value": "0000000", "description": "git sha being deployed"}],
            stages=[
                {
                    "name": "Source",
                    "actions": [
                        {
                            "name": "Source",
                            "category": "Source",
                            "owner": "AWS",
                            "provider": "S3",
                            "version": "1",
                            "output_artifacts": ["source"],
                            "configuration": {
                                "S3Bucket": args.artifact_bucket,
                                "S3ObjectKey": SOURCE_KEY,
                                "PollForSourceChanges": "false",
                            },
                        }
                    ],
                },
                {
                    "name": "Build",
                    "actions": [
                        {
                            "name": "BuildAndTest",
                            "category": "Build",
                            "owner": "AWS",
                            "provider": "CodeBuild",
                            "version": "1",
                            "input_artifacts": ["source"],
                            "configuration": {"ProjectName": build.name, "EnvironmentVariables": commit_variable},
                        }
                    ],
                },
                {
                    "name": "Deploy",
                    "actions": [
                        {
                            "name": "DeployToProduction",
                            "category": "Build",
                            "owner": "AWS",
                            "provider": "CodeBuild",
                            "version": "1",
                            "input_artifacts": ["source"],
                            "configuration": {"ProjectName": deploy.name, "EnvironmentVariables": commit_variable},
                        }
                    ],
                },
            ],
            tags=tags_for(tags, f"{name}-pipeline"),
            opts=child,
        )

        # ------------------------------------------------------------- GitHub OIDC
        if s.oidc_provider_arn:
            provider_arn: pulumi.Input[str] = s.oidc_provider_arn
        else:
            provider = aws.iam.OpenIdConnectProvider(
                f"{name}-github-oidc",
                url=f"https://{GITHUB_ISSUER}",
                client_id_lists=["sts.amazonaws.com"],
                tags=tags_for(tags, f"{name}-github-oidc"),
                opts=child,
            )
            provider_arn = provider.arn
        github_role = aws.iam.Role(
            f"{name}-github-role",
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: github_trust_policy(arn, s.repository, s.deploy_environment)
            ),
            max_session_duration=3600,
            description=f"GitHub Actions of {s.repository}@{s.branch}: upload source, start {s.name}",
            tags=tags_for(tags, f"{name}-github-role"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-github-policy",
            role=github_role.id,
            policy=pulumi.Output.all(args.artifact_bucket_arn, pipeline.arn).apply(
                lambda a: policy_document(
                    [
                        {"Sid": "UploadSource", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{a[0]}/{SOURCE_KEY}"},
                        {
                            "Sid": "RunThisPipeline",
                            "Effect": "Allow",
                            "Action": [
                                "codepipeline:StartPipelineExecution",
                                "codepipeline:GetPipelineExecution",
                                "codepipeline:GetPipelineState",
                                "codepipeline:ListPipelineExecutions",
                            ],
                            "Resource": a[1],
                        },
                    ]
                )
            ),
            opts=child,
        )

        # ------------------------------------------------------------ failure alerts
        # S24: EventBridge cannot publish to a topic under the AWS-managed
        # alias/aws/sns key (its policy cannot name events.amazonaws.com).
        alerts_key = aws.kms.Key(
            f"{name}-alerts-key",
            description=f"devprod {args.stack}: the {s.name} alerts topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=account.apply(lambda a: alerts_key_policy(args.region, a)),
            tags=tags_for(tags, f"{name}-alerts-key"),
            opts=child,
        )
        topic = aws.sns.Topic(
            f"{name}-alerts",
            kms_master_key_id=alerts_key.arn,
            tags=tags_for(tags, f"{name}-alerts"),
            opts=child,
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-failed",
            description=f"{s.name} execution failed",
            event_pattern=json.dumps(
                {
                    "source": ["aws.codepipeline"],
                    "detail-type": ["CodePipeline Pipeline Execution State Change"],
                    "detail": {"pipeline": [s.name], "state": ["FAILED"]},
                }
            ),
            tags=tags_for(tags, f"{name}-failed"),
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-alerts-policy",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, rule.arn).apply(
                lambda a: policy_document(
                    [
                        {
                            "Sid": "EventBridgePublishes",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sns:Publish",
                            "Resource": a[0],
                            "Condition": {"ArnEquals": {"aws:SourceArn": a[1]}},
                        }
                    ]
                )
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(f"{name}-failed-to-alerts", rule=rule.name, arn=topic.arn, opts=child)
        for email in s.notify_emails:
            aws.sns.TopicSubscription(
                f"{name}-alert-{email.split('@')[0]}-{email.split('@')[1].replace('.', '-')}",
                topic=topic.arn,
                protocol="email",
                endpoint=email,
                opts=child,
            )

        self.pipeline_name = pipeline.name
        self.pipeline_arn = pipeline.arn
        self.deploy_role_arn = github_role.arn
        self.build_project = build.name
        self.deploy_project = deploy.name
        self.build_log_group = log_group.name
        self.alerts_topic_arn = topic.arn
        self.register_outputs(
            {
                "pipelineName": self.pipeline_name,
                "deployRoleArn": self.deploy_role_arn,
                "buildProject": self.build_project,
                "deployProject": self.deploy_project,
                "buildLogGroup": self.build_log_group,
                "alertsTopicArn": self.alerts_topic_arn,
            }
        )

    def _codebuild_role(
        self,
        logical: str,
        account: pulumi.Output[str],
        log_group_arn: pulumi.Output[str],
        extra: pulumi.Output[list[dict[str, Any]]],
        tags: Mapping[str, str],
    ) -> aws.iam.Role:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            logical,
            assume_role_policy=service_trust_policy("codebuild.amazonaws.com", account),
            tags=tags_for(tags, logical),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{logical}-policy",
            role=role.id,
            policy=pulumi.Output.all(log_group_arn, extra).apply(
                lambda a: policy_document(
                    [
                        {
                            "Sid": "WriteBuildLogs",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": [a[0], f"{a[0]}:log-stream:*"],
                        },
                        *a[1],
                    ]
                )
            ),
            opts=child,
        )
        return role
