"""DeployPipeline: CodePipeline V2 (Source -> Test -> Release), the GitHub OIDC role, failure alerts.

Test is a CodeBuild project that runs the repository's code (install, tests,
build the release tree) and writes only its pipeline output. Release is a
Lambda function that runs no repository code: it publishes the release once
(the bucket refuses a second write, S26) and deploys it with its checksum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.common import (
    instance_arn,
    key_admin_statement,
    log_writes_statement,
    policy_document,
    read_text,
    service_trust_policy,
    tags_for,
)
from components.config import PipelineSettings
from components.load_balancer import target_group_statements

REPO = Path(__file__).resolve().parent.parent
BUILD_SPEC = REPO / "scripts" / "buildspec" / "build.yml"
# The Release function's code: the CLI's own AWS helpers plus the handler.
RELEASE_PACKAGE = REPO / "devprod"
RELEASE_FILES = ("__init__.py", "aws.py", "contracts.py", "errors.py", "ops.py", "release.py", "rollout.py")
RELEASE_HANDLER = "devprod.release.handler"
# Lambda runtime whose bundled boto3 knows S3 conditional writes (IfNoneMatch).
RELEASE_RUNTIME = "python3.13"
GITHUB_ISSUER = "token.actions.githubusercontent.com"
SOURCE_KEY = "source/app.zip"
RELEASE_PREFIX = "releases"
# Longer than the deploy document's 1800 s; the Release action cancels the
# command after this. CodePipeline allows a Lambda action one hour in all.
DEPLOY_TIMEOUT_SECONDS = 2100
# Each invocation follows the command this long, then hands CodePipeline a
# continuation token (a Lambda invocation may last at most 15 minutes).
POLL_SECONDS = 60

def release_role_name(stack: str) -> str:
    """Fixed, so the artifact bucket (created first) can name the one principal that publishes."""
    return f"devprod-{stack}-release"


def build_spec() -> str:
    return read_text(BUILD_SPEC)


def release_code() -> pulumi.AssetArchive:
    """The Release function's package: devprod/{aws,ops,release}.py, read at plan time."""
    return pulumi.AssetArchive(
        {f"devprod/{file}": pulumi.FileAsset(str(RELEASE_PACKAGE / file)) for file in RELEASE_FILES}
    )


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


def repository_code_statements(bucket_arn: str, artifacts: str, log_group_arn: str) -> list[dict[str, Any]]:
    """S26: the stage that runs repository code reads its input and writes its output; nothing under releases/."""
    return [
        {
            "Sid": "PipelineArtifacts",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
            "Resource": f"{bucket_arn}/{artifacts}",
        },
        log_writes_statement("WriteTestLogs", log_group_arn),
    ]


def _release_bucket_statements(bucket_arn: str, artifacts: str) -> list[dict[str, Any]]:
    """Read the Test output, see which releases exist, publish new ones."""
    return [
        {"Sid": "ReadTestOutput", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/{artifacts}"},
        {
            # A missing checksum object must read as 404, not 403 (S3 answers 403 without ListBucket).
            "Sid": "SeeWhichReleasesExist",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": f"{RELEASE_PREFIX}/*"}},
        },
        {
            # Writes only: the bucket policy refuses any that would replace an object (S26).
            "Sid": "PublishReleasesOnce",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject"],
            "Resource": f"{bucket_arn}/{RELEASE_PREFIX}/*",
        },
    ]


def release_statements(
    target_tags: Mapping[str, str],
    bucket_arn: str,
    artifacts: str,
    document_arn: str,
    instance_arn: str,
    log_group_arn: str,
    pipeline_arn: str,
    live_release_arn: str | None = None,
    target_group_arn: str | None = None,
) -> list[dict[str, Any]]:
    """The Release function: read the Test output, publish releases once, deploy to this stack's production."""
    return [
        *_release_bucket_statements(bucket_arn, artifacts),
        {
            # S16: the deploy document only, on instances of this stack's production.
            # The document carries the same tags, so one tag condition covers both.
            "Sid": "SendDeployDocumentToProduction",
            "Effect": "Allow",
            "Action": "ssm:SendCommand",
            "Resource": [document_arn, instance_arn],
            "Condition": {"StringEquals": {f"ssm:resourceTag/{k}": v for k, v in target_tags.items()}},
        },
        {
            # No resource-level permissions exist for these.
            "Sid": "FollowAndCancelCommands",
            "Effect": "Allow",
            "Action": [
                "ssm:GetCommandInvocation",
                "ssm:ListCommandInvocations",
                "ssm:ListCommands",
                "ssm:CancelCommand",
                "ec2:DescribeInstances",
            ],
            "Resource": "*",
        },
        {
            # The function takes its work from the pipeline's own state, not from the event.
            "Sid": "ReadWhatThePipelineAsks",
            "Effect": "Allow",
            "Action": ["codepipeline:GetPipelineState", "codepipeline:GetPipelineExecution", "codepipeline:ListActionExecutions"],
            "Resource": pipeline_arn,
        },
        {
            "Sid": "ReportToThePipeline",
            "Effect": "Allow",
            "Action": ["codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult"],
            "Resource": "*",
        },
        log_writes_statement("WriteReleaseLogs", log_group_arn),
        *live_release_statements(live_release_arn),
        *target_group_statements(target_group_arn),
        # IAM offers no resource scope for Describe* on load balancers (operators have it as HostHealth).
        *([{"Sid": "FollowTheDrain", "Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetHealth",
            "Resource": "*"}] if target_group_arn else []),
    ]


def live_release_statements(parameter_arn: str | None) -> list[dict[str, Any]]:
    """Read the release the hosts serve (the rollback target), record the new one after every host took it."""
    if not parameter_arn:
        return []
    return [{"Sid": "RecordTheLiveRelease", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"],
             "Resource": parameter_arn}]


def bake_statements(alarm_arns: Sequence[str]) -> list[dict[str, Any]]:
    """The bake condition's CloudWatchAlarm rules read these alarms' state (the pipeline role evaluates rules)."""
    if not alarm_arns:
        return []
    return [{"Sid": "WatchBakeAlarms", "Effect": "Allow", "Action": "cloudwatch:DescribeAlarms", "Resource": list(alarm_arns)}]


def pipeline_statements(bucket_arn: str, artifacts: str, project_arn: str, function_arn: str,
                        alarm_arns: Sequence[str] = ()) -> list[dict[str, Any]]:
    return [
        *bake_statements(alarm_arns),
        {"Sid": "ReadSource", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"{bucket_arn}/{SOURCE_KEY}"},
        {"Sid": "SourceBucketState", "Effect": "Allow", "Action": "s3:GetBucketVersioning", "Resource": bucket_arn},
        {
            "Sid": "PipelineArtifacts",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
            "Resource": f"{bucket_arn}/{artifacts}",
        },
        {"Sid": "RunTests", "Effect": "Allow", "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds"], "Resource": project_arn},
        {"Sid": "RunRelease", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arn},
    ]


def github_statements(bucket_arn: str, pipeline_arn: str) -> list[dict[str, Any]]:
    """S15: put the source object, start (and read) this one pipeline."""
    return [
        {"Sid": "UploadSource", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{SOURCE_KEY}"},
        {
            "Sid": "RunThisPipeline",
            "Effect": "Allow",
            "Action": [
                "codepipeline:StartPipelineExecution",
                "codepipeline:GetPipelineExecution",
                "codepipeline:GetPipelineState",
                "codepipeline:ListPipelineExecutions",
            ],
            "Resource": pipeline_arn,
        },
    ]


def alarm_rule_pattern(alarm_names: list[str]) -> str:
    """These alarms (this region and account) entering ALARM."""
    return json.dumps(
        {
            "source": ["aws.cloudwatch"],
            "detail-type": ["CloudWatch Alarm State Change"],
            "detail": {"alarmName": list(alarm_names), "state": {"value": ["ALARM"]}},
        }
    )


def alert_rule_pattern(pipeline: str) -> str:
    return json.dumps(
        {
            "source": ["aws.codepipeline"],
            "detail-type": ["CodePipeline Pipeline Execution State Change"],
            "detail": {"pipeline": [pipeline], "state": ["FAILED"]},
        }
    )


def _rule(name: str, provider: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    # The wire name: the SDK does not translate `rule_type_id` this deep in a plain dict.
    return {
        "name": name[:100],
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
        "configuration": dict(configuration),
    }


def release_conditions(
    settings: PipelineSettings, alarms: Sequence[str]
) -> dict[str, Any]:
    """The Release stage's conditions: deploy windows before it, bake after it, rollback on failure.

    - before_entry: with deployWindow, Release is entered only inside it (a
      DeploymentWindow rule); an execution outside it does not deploy.
    - on_success (bake): every alarm is watched for bakeMinutes; one in ALARM
      fails the condition and CodePipeline rolls Release back to the last
      execution that succeeded, which re-runs the Release function on that
      release.
    - on_failure: a failed Release (a host failed, the rollout already put the
      updated hosts back) is rolled back the same way, so every host ends on
      the last good release.
    """
    conditions: dict[str, Any] = {"on_failure": {"result": "ROLLBACK"}}
    window = settings.deploy_window
    if window is not None:
        rule = _rule("DeployWindow", "DeploymentWindow", {"Cron": window.cron, "TimeZone": window.time_zone})
        conditions["before_entry"] = {"conditions": [{"result": "FAIL", "rules": [rule]}]}
    if alarms and settings.bake_minutes > 0:
        rules = [
            _rule(f"Bake{i + 1}", "CloudWatchAlarm", {"AlarmName": alarm, "WaitTime": str(settings.bake_minutes)})
            for i, alarm in enumerate(alarms)
        ]
        conditions["on_success"] = {"conditions": [{"result": "ROLLBACK", "rules": rules}]}
    return conditions


def stages(source_bucket: pulumi.Input[str], project: pulumi.Input[str], function: pulumi.Input[str],
           release_conditions: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Source (exact S3 object version) -> Test (CodeBuild) -> Release (Lambda, no repository code)."""
    commit = "#{variables.COMMIT_SHA}"
    return [
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
                    "configuration": {"S3Bucket": source_bucket, "S3ObjectKey": SOURCE_KEY, "PollForSourceChanges": "false"},
                }
            ],
        },
        {
            "name": "Test",
            "actions": [
                {
                    "name": "TestAndPackage",
                    "category": "Build",
                    "owner": "AWS",
                    "provider": "CodeBuild",
                    "version": "1",
                    "input_artifacts": ["source"],
                    "output_artifacts": ["release"],
                    "configuration": {
                        "ProjectName": project,
                        "EnvironmentVariables": json.dumps([{"name": "COMMIT_SHA", "value": commit, "type": "PLAINTEXT"}]),
                    },
                }
            ],
        },
        {
            "name": "Release",
            "actions": [
                {
                    "name": "PublishAndDeploy",
                    "category": "Invoke",
                    "owner": "AWS",
                    "provider": "Lambda",
                    "version": "1",
                    "input_artifacts": ["release"],
                    "namespace": "Release",
                    "configuration": {"FunctionName": function, "UserParameters": json.dumps({"commit": commit})},
                }
            ],
            **(release_conditions or {}),
        },
    ]


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
    # The production service's tags: what the Release action may send the document to (S16).
    target_tags: Mapping[str, str] = field(default_factory=dict)
    # Run in the Test stage after the tests, in a clean copy of the source, to
    # build the release tree (e.g. production node_modules): the host installs nothing.
    package_commands: tuple[str, ...] = ()
    # The service's alarms (ProductionService.alarm_names) the pipeline watches after Release.
    bake_alarms: Sequence[pulumi.Input[str]] = ()
    # Where the Release function records the release every host serves (devprod.contracts).
    live_release_parameter: str = ""
    # Behind a load balancer: its target group and the port the hosts are registered on.
    target_group_arn: pulumi.Input[str] | None = None
    target_port: int = 0
    log_retention_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)


class DeployPipeline(pulumi.ComponentResource):
    pipeline_name: pulumi.Output[str]
    pipeline_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]
    build_project: pulumi.Output[str]
    release_function: pulumi.Output[str]
    build_log_group: pulumi.Output[str]
    release_log_group: pulumi.Output[str]
    alerts_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: DeployPipelineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:delivery:DeployPipeline", name, None, opts)
        self._name, self._args, self._tags = name, args, dict(args.tags)
        self._child = pulumi.ResourceOptions(parent=self)
        self._account = pulumi.Output.from_input(args.account_id)
        # CodePipeline keeps stage artifacts under the first 20 characters of its name.
        self._artifacts = f"{args.settings.name[:20]}/*"

        build, build_logs = self._test_stage()
        function, release_logs = self._release_action()
        pipeline = self._pipeline(build, function)
        github_role = self._github_role(pipeline)
        topic = self._alerts()

        self.pipeline_name = pipeline.name
        self.pipeline_arn = pipeline.arn
        self.deploy_role_arn = github_role.arn
        self.build_project = build.name
        self.release_function = function.name
        self.build_log_group = build_logs.name
        self.release_log_group = release_logs.name
        self.alerts_topic_arn = topic.arn
        self.register_outputs(
            {
                "pipelineName": self.pipeline_name,
                "deployRoleArn": self.deploy_role_arn,
                "buildProject": self.build_project,
                "releaseFunction": self.release_function,
                "buildLogGroup": self.build_log_group,
                "releaseLogGroup": self.release_log_group,
                "alertsTopicArn": self.alerts_topic_arn,
            }
        )

    def _bake_alarms(self) -> list[pulumi.Input[str]]:
        """The service's alarms, then the ones the config adds."""
        return [*self._args.bake_alarms, *self._args.settings.bake_alarms]

    def _alarm_arns(self) -> pulumi.Output[list[str]]:
        region = self._args.region
        return pulumi.Output.all(self._account, *self._bake_alarms()).apply(
            lambda a: [f"arn:aws:cloudwatch:{region}:{a[0]}:alarm:{name}" for name in a[1:]]
        )

    def _parameter_arn(self) -> pulumi.Output[str | None]:
        name, region = self._args.live_release_parameter, self._args.region
        return self._account.apply(lambda a: f"arn:aws:ssm:{region}:{a}:parameter{name}" if name else None)

    def _log_group(self, suffix: str, path: str) -> aws.cloudwatch.LogGroup:
        logical = f"{self._name}-{suffix}"
        return aws.cloudwatch.LogGroup(
            logical,
            name=f"/devprod/{self._args.stack}/{path}",
            retention_in_days=self._args.log_retention_days,
            tags=tags_for(self._tags, logical),
            opts=self._child,
        )

    def _role(
        self, suffix: str, service: str, description: str, statements: pulumi.Output[list], name: str | None = None
    ) -> aws.iam.Role:
        """`{name}-{suffix}` trusted by one service of this account, with one inline policy."""
        logical = f"{self._name}-{suffix}"
        role = aws.iam.Role(
            logical,
            name=name,
            assume_role_policy=service_trust_policy(service, self._account),
            description=description,
            tags=tags_for(self._tags, logical),
            opts=self._child,
        )
        aws.iam.RolePolicy(
            f"{logical}-policy", role=role.id, policy=statements.apply(policy_document), opts=self._child
        )
        return role

    def _test_stage(self) -> tuple[aws.codebuild.Project, aws.cloudwatch.LogGroup]:
        """The CodeBuild project that runs the repository's code: it holds no secret and writes no release."""
        s, args = self._args.settings, self._args
        # Its own log group: repository code must not forge or erase what the Release action reports.
        logs = self._log_group("build-logs", "codebuild")
        role = self._role(
            "build-role",
            "codebuild.amazonaws.com",
            f"devprod Test stage of {s.repository}: its pipeline artifacts and logs only",
            pulumi.Output.all(args.artifact_bucket_arn, logs.arn).apply(
                lambda a: repository_code_statements(a[0], self._artifacts, a[1])
            ),
        )
        project = aws.codebuild.Project(
            f"{self._name}-build",
            description=f"devprod: test {s.repository} and build the release tree (no secrets, no publishing)",
            service_role=role.arn,
            build_timeout=s.build_timeout_minutes,
            source={"type": "CODEPIPELINE", "buildspec": build_spec()},
            artifacts={"type": "CODEPIPELINE"},
            # Package downloads stay on the build host between close builds; npm
            # and pip verify what they take from it against the lockfile hashes.
            cache={"type": "LOCAL", "modes": ["LOCAL_CUSTOM_CACHE"]},
            environment={
                "compute_type": "BUILD_GENERAL1_SMALL",
                "image": s.build_image,
                "type": "LINUX_CONTAINER",
                "privileged_mode": False,
                "environment_variables": [
                    {"name": "TEST_COMMANDS", "value": "\n".join(s.test_commands), "type": "PLAINTEXT"},
                    {"name": "PACKAGE_COMMANDS", "value": "\n".join(args.package_commands), "type": "PLAINTEXT"},
                ],
            },
            logs_config={"cloudwatch_logs": {"status": "ENABLED", "group_name": logs.name}},
            tags=tags_for(self._tags, f"{self._name}-build"),
            opts=self._child,
        )
        return project, logs

    def _release_action(self) -> tuple[aws.lambda_.Function, aws.cloudwatch.LogGroup]:
        """The Lambda function that publishes the tested release once and deploys it (runs no repository code)."""
        args = self._args
        logs = self._log_group("release-logs", "release")
        any_instance = self._account.apply(lambda a: instance_arn(args.region, a, "*"))
        # Built from the name, not the resource: the pipeline is created after the function it invokes.
        pipeline_arn = self._account.apply(lambda a: f"arn:aws:codepipeline:{args.region}:{a}:{args.settings.name}")
        role = self._role(
            "release-role",
            "lambda.amazonaws.com",
            f"devprod Release action of {args.settings.name}: publish releases once, deploy to {args.stack} production",
            pulumi.Output.all(args.artifact_bucket_arn, args.document_arn, any_instance, logs.arn, pipeline_arn,
                              self._parameter_arn(), args.target_group_arn).apply(
                lambda a: release_statements(args.target_tags, a[0], self._artifacts, a[1], a[2], a[3], a[4], a[5],
                                             target_group_arn=a[6])
            ),
            name=release_role_name(args.stack),
        )
        function = aws.lambda_.Function(
            f"{self._name}-release",
            description=f"devprod: publish the tested release of {args.settings.repository} once, deploy it to {args.stack}",
            runtime=RELEASE_RUNTIME,
            handler=RELEASE_HANDLER,
            code=release_code(),
            role=role.arn,
            timeout=900,
            memory_size=1024,
            ephemeral_storage={"size": 4096},
            environment={
                "variables": {
                    "PIPELINE_NAME": args.settings.name,
                    "ARTIFACT_BUCKET": args.artifact_bucket,
                    "RELEASE_PREFIX": RELEASE_PREFIX,
                    "DOCUMENT_NAME": args.document_name,
                    "TARGET_STACK": args.stack,
                    "LOG_GROUP": f"/devprod/{args.stack}/deploy",
                    "DEPLOY_TIMEOUT": str(DEPLOY_TIMEOUT_SECONDS),
                    "POLL_SECONDS": str(POLL_SECONDS),
                    "BATCH_SIZE": str(args.settings.batch),
                    "LIVE_RELEASE_PARAMETER": args.live_release_parameter,
                    **self._balancer_variables(),
                }
            },
            logging_config={"log_format": "Text", "log_group": logs.name},
            tags=tags_for(self._tags, f"{self._name}-release"),
            opts=self._child,
        )
        return function, logs

    def _balancer_variables(self) -> dict[str, pulumi.Input[str]]:
        """Where each batch of hosts leaves and rejoins the load balancer (none: no variables)."""
        args = self._args
        if args.target_group_arn is None:
            return {}
        return {"TARGET_GROUP_ARN": args.target_group_arn, "TARGET_PORT": str(args.target_port)}

    def _pipeline(self, build: aws.codebuild.Project, function: aws.lambda_.Function) -> aws.codepipeline.Pipeline:
        s, args = self._args.settings, self._args
        role = self._role(
            "pipeline-role",
            "codepipeline.amazonaws.com",
            f"CodePipeline {s.name}",
            pulumi.Output.all(args.artifact_bucket_arn, build.arn, function.arn, self._alarm_arns()).apply(
                lambda a: pipeline_statements(a[0], self._artifacts, a[1], a[2], a[3])
            ),
        )
        return aws.codepipeline.Pipeline(
            f"{self._name}-pipeline",
            name=s.name,
            pipeline_type="V2",
            execution_mode="QUEUED",
            role_arn=role.arn,
            artifact_stores=[{"location": args.artifact_bucket, "type": "S3"}],
            # The only variable: the commit. It picks what is deployed (checked by
            # pattern in the buildspec, the Release action and the document), never where (S11).
            variables=[{"name": "COMMIT_SHA", "default_value": "0000000", "description": "git sha being deployed"}],
            stages=stages(args.artifact_bucket, build.name, function.name,
                          release_conditions(s, self._bake_alarms())),
            tags=tags_for(self._tags, f"{self._name}-pipeline"),
            opts=self._child,
        )

    def _github_role(self, pipeline: aws.codepipeline.Pipeline) -> aws.iam.Role:
        s, args = self._args.settings, self._args
        if s.oidc_provider_arn:
            provider_arn: pulumi.Input[str] = s.oidc_provider_arn
        else:
            provider = aws.iam.OpenIdConnectProvider(
                f"{self._name}-github-oidc",
                url=f"https://{GITHUB_ISSUER}",
                client_id_lists=["sts.amazonaws.com"],
                tags=tags_for(self._tags, f"{self._name}-github-oidc"),
                opts=self._child,
            )
            provider_arn = provider.arn
        role = aws.iam.Role(
            f"{self._name}-github-role",
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: github_trust_policy(arn, s.repository, s.deploy_environment)
            ),
            max_session_duration=3600,
            description=f"GitHub Actions of {s.repository}@{s.branch}: upload source, start {s.name}",
            tags=tags_for(self._tags, f"{self._name}-github-role"),
            opts=self._child,
        )
        aws.iam.RolePolicy(
            f"{self._name}-github-policy",
            role=role.id,
            policy=pulumi.Output.all(args.artifact_bucket_arn, pipeline.arn).apply(
                lambda a: policy_document(github_statements(a[0], a[1]))
            ),
            opts=self._child,
        )
        return role

    def _publishers(self, topic: aws.sns.Topic, rules: dict[str, aws.cloudwatch.EventRule]) -> None:
        """EventBridge may publish to the topic for these rules only (S24), and each rule targets it."""
        aws.sns.TopicPolicy(
            f"{self._name}-alerts-policy",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, *[r.arn for r in rules.values()]).apply(
                lambda a: policy_document(
                    [
                        {
                            "Sid": "EventBridgePublishes",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sns:Publish",
                            "Resource": a[0],
                            "Condition": {"ArnEquals": {"aws:SourceArn": a[1] if len(a) == 2 else list(a[1:])}},
                        }
                    ]
                )
            ),
            opts=self._child,
        )
        for logical, rule in rules.items():
            aws.cloudwatch.EventTarget(f"{logical}-to-alerts", rule=rule.name, arn=topic.arn, opts=self._child)

    def _alerts(self) -> aws.sns.Topic:
        """Failed executions to e-mail, through a topic EventBridge can publish to (S24)."""
        s, args, name = self._args.settings, self._args, self._name
        key = aws.kms.Key(
            f"{name}-alerts-key",
            description=f"devprod {args.stack}: the {s.name} alerts topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=self._account.apply(lambda a: alerts_key_policy(args.region, a)),
            tags=tags_for(self._tags, f"{name}-alerts-key"),
            opts=self._child,
        )
        topic = aws.sns.Topic(
            f"{name}-alerts", kms_master_key_id=key.arn, tags=tags_for(self._tags, f"{name}-alerts"), opts=self._child
        )
        rules = {f"{name}-failed": aws.cloudwatch.EventRule(
            f"{name}-failed",
            description=f"{s.name} execution failed",
            event_pattern=alert_rule_pattern(s.name),
            tags=tags_for(self._tags, f"{name}-failed"),
            opts=self._child,
        )}
        if self._bake_alarms():
            # A bake alarm rolls Release back on its own; the team hears of it here.
            rules[f"{name}-alarm"] = aws.cloudwatch.EventRule(
                f"{name}-alarm",
                description=f"{s.name}: an alarm the Release stage bakes on went to ALARM",
                event_pattern=pulumi.Output.all(*self._bake_alarms()).apply(alarm_rule_pattern),
                tags=tags_for(self._tags, f"{name}-alarm"),
                opts=self._child,
            )
        self._publishers(topic, rules)
        for email in s.notify_emails:
            local, domain = email.split("@", 1)
            aws.sns.TopicSubscription(
                f"{name}-alert-{local}-{domain.replace('.', '-')}",
                topic=topic.arn,
                protocol="email",
                endpoint=email,
                opts=self._child,
            )
        return topic
