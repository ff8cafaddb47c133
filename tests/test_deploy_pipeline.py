"""DeployPipeline and GitHubWiring under mocks: S8-S16 and S19, IAM linted by parliament."""

from __future__ import annotations

import json
import re

import pytest
from parliament import analyze_policy_string

from components.common import github_oidc_trust
from components.config import ConfigError, parse_stack_config
from components.deploy_pipeline import github_trust_policy
from components.github_repo import UPDATE_BRANCH_PREFIX, WORKFLOW_PATH, update_branch, workflow_text
from policy import iam
from tests.component_plans import BUCKET, BUCKET_ARN, DOCUMENT, pipeline_plan
from tests.conftest import STACKS, plan_of

PROVIDER = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
APP_PRODUCTION = "repo:example-org/app:environment:production"


@pytest.fixture
def plan(prod_plan):
    """The whole prod stack: for contracts between the pipeline and its neighbours."""
    return prod_plan


@pytest.fixture(scope="module")
def pipeline():
    """DeployPipeline alone, from the suite's prod config."""
    from devprod.plan import load_stack_raw

    return pipeline_plan(load_stack_raw(STACKS, "prod")[0])


def all_policies(plan):
    for r in plan.resources:
        for key in ("policy", "assumeRolePolicy"):
            if key in r.inputs and isinstance(r.inputs[key], str) and r.type.startswith("aws:"):
                yield r, key, r.inputs[key]


def test_s11_pipeline_is_v2_queued_with_three_stages(pipeline):
    pipeline = pipeline.named("delivery-pipeline").inputs
    assert pipeline["name"] == "MatsightDeployPipeline"
    assert pipeline["pipelineType"] == "V2" and pipeline["executionMode"] == "QUEUED"
    assert [stage["name"] for stage in pipeline["stages"]] == ["Source", "Test", "Release"]
    source = pipeline["stages"][0]["actions"][0]
    assert source["provider"] == "S3" and source["configuration"]["PollForSourceChanges"] == "false"
    assert source["configuration"]["S3ObjectKey"] == "source/app.zip"
    assert [v["name"] for v in pipeline["variables"]] == ["COMMIT_SHA"]
    for stage in pipeline["stages"]:
        for action in stage["actions"]:
            used = set(re.findall(r"#\{variables\.(\w+)\}", json.dumps(action["configuration"])))
            assert used <= {"COMMIT_SHA"}, action["name"]
    (test,) = pipeline["stages"][1]["actions"]
    assert (test["provider"], test["inputArtifacts"], test["outputArtifacts"]) == ("CodeBuild", ["source"], ["release"])
    (release,) = pipeline["stages"][2]["actions"]
    assert (release["category"], release["provider"], release["inputArtifacts"]) == ("Invoke", "Lambda", ["release"])
    assert json.loads(release["configuration"]["UserParameters"]) == {"commit": "#{variables.COMMIT_SHA}"}


def test_s11_deploy_target_is_fixed_on_the_function_not_a_variable(pipeline):
    function = pipeline.named("delivery-release").inputs
    assert function["environment"]["variables"] == {
        "PIPELINE_NAME": "MatsightDeployPipeline",
        "ARTIFACT_BUCKET": BUCKET,
        "RELEASE_PREFIX": "releases",
        "DOCUMENT_NAME": DOCUMENT,
        "TARGET_STACK": "prod",
        "LOG_GROUP": "/devprod/prod/deploy",
        "DEPLOY_TIMEOUT": "2100",
        "POLL_SECONDS": "60",
        "BATCH_SIZE": "1",
        "LIVE_RELEASE_PARAMETER": "/devprod/prod/live-release",
    }
    assert function["handler"] == "devprod.release.handler" and function["runtime"] == "python3.13"
    assert sorted(function["code"]["archive"]) == [f"devprod/{f}" for f in ("__init__.py", "aws.py", "contracts.py", "errors.py", "ops.py", "release.py", "rollout.py")]
    assert function["loggingConfig"]["logGroup"] == "/devprod/prod/release"


def test_s10_s26_test_stage_unprivileged_logged_and_holds_no_secret(pipeline):
    inputs = pipeline.named("delivery-build").inputs
    assert inputs["environment"]["privilegedMode"] is False
    assert inputs["logsConfig"]["cloudwatchLogs"] == {"status": "ENABLED", "groupName": "/devprod/prod/codebuild"}
    env = {v["name"]: v for v in inputs["environment"]["environmentVariables"]}
    assert sorted(env) == ["PACKAGE_COMMANDS", "TEST_COMMANDS"]
    assert all(v["type"] == "PLAINTEXT" for v in env.values())
    assert env["PACKAGE_COMMANDS"]["value"] == "npm ci --omit=dev"
    assert env["TEST_COMMANDS"]["value"] == "npm ci\nnpm test"


def test_s26_test_stage_role_reads_and_writes_only_pipeline_artifacts(pipeline):
    statements = json.loads(pipeline.named("delivery-build-role-policy").inputs["policy"])["Statement"]
    resources = [r for s in statements for r in iam.as_list(s["Resource"])]
    assert f"{BUCKET_ARN}/MatsightDeployPipeli/*" in resources
    assert not [r for r in resources if "releases" in r or r == f"{BUCKET_ARN}/*" or r == "*"]


def test_s26_release_role_publishes_and_deploys(pipeline):
    statements = {s["Sid"]: s for s in json.loads(pipeline.named("delivery-release-role-policy").inputs["policy"])["Statement"]}
    assert statements["PublishReleasesOnce"]["Resource"] == f"{BUCKET_ARN}/releases/*"
    assert statements["ReadTestOutput"]["Resource"] == f"{BUCKET_ARN}/MatsightDeployPipeli/*"
    assert "ssm:CancelCommand" in statements["FollowAndCancelCommands"]["Action"]


def test_s26_bucket_refuses_overwriting_and_deleting_releases(plan):
    statements = {s["Sid"]: s for s in json.loads(plan.named("artifacts-tls-only").inputs["policy"])["Statement"]}
    once = statements["ReleasesAreWrittenOnce"]
    assert (once["Effect"], once["Principal"], once["Action"]) == ("Deny", "*", "s3:PutObject")
    assert once["Resource"] == "arn:aws:s3:::artifacts-bucket-computed/releases/*"
    assert once["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    only = statements["OnlyTheReleaseActionPublishes"]
    assert (only["Effect"], only["Principal"], only["Action"]) == ("Deny", "*", "s3:PutObject")
    release_role = plan.named("delivery-release-role")
    assert release_role.inputs["name"] == "devprod-prod-release"
    assert only["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": release_role.computed["arn"]}}
    never = statements["ReleasesAreNeverDeleted"]
    assert never["Effect"] == "Deny" and never["Action"] == ["s3:DeleteObject", "s3:DeleteObjectVersion"]


def test_s9_every_log_group_has_retention(plan):
    groups = plan.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert {g.inputs["name"] for g in groups} == {
        "/devprod/prod/deploy",
        "/devprod/prod/codebuild",
        "/devprod/prod/release",
        "/devprod/prod/vpc-flow-logs/network",
    }
    assert all(g.inputs["retentionInDays"] == 30 for g in groups)


def test_s12_no_wildcards_and_parliament_is_clean(plan):
    checked = set()
    for resource, key, text in all_policies(plan):
        checked.add(resource.type)
        assert iam.wildcard_problems(text) == [], resource.urn
        assert iam.duplicate_keys(text) == [], resource.urn
        if key == "policy":
            findings = analyze_policy_string(text).findings
            # Parliament reads every document as an identity policy; in a key
            # policy Resource "*" means "this key", the only form KMS accepts.
            expected = {"RESOURCE_STAR"} if resource.type == "aws:kms/key:Key" else set()
            # ec2:SourceInstanceARN is one of IAM's cross-service condition keys (set on every
            # request signed with instance-role credentials); parliament lists keys per service only.
            # ssm:SessionDocumentAccessCheck is Session Manager's documented key for StartSession
            # (the operators' policy, S29); parliament's action table predates it.
            documented = ("ec2:SourceInstanceARN", "ssm:SessionDocumentAccessCheck")
            found = [(f.issue, f.detail) for f in findings if f.issue not in expected
                     and not (f.issue == "UNKNOWN_CONDITION_FOR_ACTION" and any(k in str(f.detail) for k in documented))]
            assert found == [], resource.urn
    # Every kind of document the prod stack writes went through the checks above.
    assert checked >= {
        "aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy", "aws:kms/key:Key",
        "aws:s3/bucketPolicy:BucketPolicy", "aws:sns/topicPolicy:TopicPolicy",
    }


def test_s13_service_roles_trust_one_service_with_source_account(plan):
    expected = {
        "delivery-build-role": "codebuild.amazonaws.com",
        "delivery-release-role": "lambda.amazonaws.com",
        "delivery-pipeline-role": "codepipeline.amazonaws.com",
        "production-role": "ec2.amazonaws.com",
        "network-flow-logs-role": "vpc-flow-logs.amazonaws.com",
    }
    for name, service in expected.items():
        assert iam.service_trust_problems(plan.named(name).inputs["assumeRolePolicy"], service) == [], name


def test_s14_s27_deploy_role_trusts_only_the_app_repositorys_production_environment(pipeline):
    trust = pipeline.named("delivery-github-role").inputs["assumeRolePolicy"]
    assert iam.github_trust_problems(trust, provider_arn=PROVIDER, subject=APP_PRODUCTION) == []
    assert json.loads(trust)["Statement"][0]["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                         "token.actions.githubusercontent.com:sub": APP_PRODUCTION}
    }
    # One trust shape in the whole program: the deploy role's equals the CI roles' builder.
    assert trust == github_oidc_trust(PROVIDER, APP_PRODUCTION)
    oidc = pipeline.named("delivery-github-oidc").inputs
    assert oidc["url"] == "https://token.actions.githubusercontent.com"
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"]


def test_deploy_environment_is_configurable(prod_raw):
    prod_raw["devprod:pipeline"]["deployEnvironment"] = "prod-deploy"
    plan = plan_of(prod_raw)
    trust = plan.named("delivery-github-role").inputs["assumeRolePolicy"]
    assert iam.github_trust_problems(
        trust, provider_arn=PROVIDER, subject="repo:example-org/app:environment:prod-deploy"
    ) == []
    assert plan.named("github-environment-prod-deploy").inputs["environment"] == "prod-deploy"
    assert "    environment: prod-deploy\n" in plan.named("github-deploy-workflow").inputs["content"]


def _trust(condition):
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": PROVIDER},
        "Action": "sts:AssumeRoleWithWebIdentity", "Condition": condition}]}


AUD = {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
SUB = "token.actions.githubusercontent.com:sub"
NOT_EXACT = "is not one exact subject (repo:OWNER/REPO:ref:refs/heads/BRANCH, repo:OWNER/REPO:environment:NAME or repo:OWNER/REPO:pull_request)"


@pytest.mark.parametrize(
    "condition, expected",
    [
        ({"StringEquals": dict(AUD)}, "missing token.actions.githubusercontent.com:sub"),
        ({"StringEquals": {**AUD, SUB: "repo:example-org/*"}}, f"{SUB} 'repo:example-org/*' {NOT_EXACT}"),
        ({"StringEquals": {**AUD, SUB: "repo:example-org/app:*"}}, f"{SUB} 'repo:example-org/app:*' {NOT_EXACT}"),
        ({"StringEquals": {**AUD, SUB: "repo:example-org/app:ref:refs/heads/*"}},
         f"{SUB} 'repo:example-org/app:ref:refs/heads/*' {NOT_EXACT}"),
        ({"StringEquals": {**AUD, SUB: "repo:example-org/app:environment:prod?"}},
         f"{SUB} 'repo:example-org/app:environment:prod?' {NOT_EXACT}"),
        ({"StringEquals": {**AUD, SUB: [APP_PRODUCTION, "repo:example-org/app:pull_request"]}},
         f"{SUB} names 2 subjects ['{APP_PRODUCTION}', 'repo:example-org/app:pull_request']; exactly one allowed, as a string"),
        ({"StringLike": {**AUD, SUB: APP_PRODUCTION}}, "condition must be exactly one StringEquals block, got ['StringLike']"),
        ({"StringEquals": {**AUD, SUB: APP_PRODUCTION}, "ForAllValues:StringEquals": {SUB: [APP_PRODUCTION]}},
         "condition must be exactly one StringEquals block, got ['ForAllValues:StringEquals', 'StringEquals']"),
        ({"StringEquals": {SUB: APP_PRODUCTION}}, "missing token.actions.githubusercontent.com:aud"),
        ({"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com.evil", SUB: APP_PRODUCTION}},
         "token.actions.githubusercontent.com:aud is 'sts.amazonaws.com.evil'; must be exactly 'sts.amazonaws.com'"),
        ({"StringEquals": {**AUD, SUB: "repo:example-org/app:ref:refs/heads/main"}},
         f"{SUB} is 'repo:example-org/app:ref:refs/heads/main'; must be exactly '{APP_PRODUCTION}'"),
        ({"StringEquals": {**AUD, SUB: APP_PRODUCTION, "token.actions.githubusercontent.com:actor": "x"}},
         "unexpected condition keys ['token.actions.githubusercontent.com:actor']"),
    ],
)
def test_s14_failing_trust_shapes(condition, expected):
    problems = iam.github_trust_problems(_trust(condition), provider_arn=PROVIDER, subject=APP_PRODUCTION)
    assert expected in problems, problems


def test_s14_duplicate_condition_keys_are_caught_in_the_text():
    text = github_trust_policy(PROVIDER, "example-org/app", "production")
    doubled = text.replace(
        '"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"',
        '"token.actions.githubusercontent.com:sub": "repo:example-org/*", "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"',
    )
    assert iam.duplicate_keys(doubled) == ["duplicate key 'token.actions.githubusercontent.com:sub'"]
    assert iam.duplicate_keys(text) == []


def test_s14_existing_oidc_provider_is_used_by_arn(prod_raw):
    existing = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com"
    prod_raw["devprod:pipeline"]["oidcProviderArn"] = existing
    plan = plan_of(prod_raw)
    assert not plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    trust = plan.named("delivery-github-role").inputs["assumeRolePolicy"]
    assert iam.github_trust_problems(trust, provider_arn=existing, subject=APP_PRODUCTION) == []


def test_s15_github_role_can_only_upload_source_and_run_this_pipeline(pipeline):
    role = pipeline.named("delivery-github-role").inputs
    assert role["maxSessionDuration"] == 3600
    statements = json.loads(pipeline.named("delivery-github-policy").inputs["policy"])["Statement"]
    assert statements == [
        {"Sid": "UploadSource", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"{BUCKET_ARN}/source/app.zip"},
        {"Sid": "RunThisPipeline", "Effect": "Allow",
         "Action": ["codepipeline:StartPipelineExecution", "codepipeline:GetPipelineExecution",
                    "codepipeline:GetPipelineState", "codepipeline:ListPipelineExecutions"],
         "Resource": "arn:aws:codepipeline:eu-central-1:123456789012:MatsightDeployPipeline"},
    ]


def test_s16_send_command_only_for_the_document_on_tagged_production(plan):
    statements = json.loads(plan.named("delivery-release-role-policy").inputs["policy"])["Statement"]
    (send,) = [s for s in statements if "ssm:SendCommand" in iam._list(s["Action"])]
    assert send["Resource"] == [
        "arn:aws:ssm:eu-central-1:123456789012:document/production-deploy-computed",
        "arn:aws:ec2:eu-central-1:123456789012:instance/*",
    ]
    assert send["Condition"] == {"StringEquals": {"ssm:resourceTag/devprod:stack": "prod", "ssm:resourceTag/devprod:role": "production"}}
    # The tag condition also holds for the document: it carries the same tags.
    document_tags = plan.named("production-deploy").inputs["tags"]
    assert document_tags["devprod:stack"] == "prod" and document_tags["devprod:role"] == "production"
    assert "AWS-RunShellScript" not in json.dumps([r.inputs for r in plan.resources])


def test_s19_actions_variables_not_secrets(plan):
    variables = {r.inputs["variableName"]: r.inputs["value"] for r in plan.of_type("github:index/actionsVariable:ActionsVariable")}
    assert variables == {
        "AWS_REGION": "eu-central-1",
        "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/delivery-github-role-computed",
        "PIPELINE_NAME": "MatsightDeployPipeline",
        "SOURCE_BUCKET": "artifacts-bucket-computed",
    }
    assert all(r.inputs["repository"] == "app" for r in plan.of_type("github:index/actionsVariable:ActionsVariable"))
    assert not plan.of_type("github:index/actionsSecret:ActionsSecret")


def test_branch_protection_and_deploy_environment(plan):
    protection = plan.named("github-protect-main").inputs
    assert protection["pattern"] == "main" and protection["enforceAdmins"] is True
    assert protection["requiredPullRequestReviews"][0]["requiredApprovingReviewCount"] == 1
    assert protection["requiredStatusChecks"][0]["contexts"] == ["test"]
    environment = plan.named("github-environment-production").inputs
    assert environment["environment"] == "production" and environment["repository"] == "app"
    # Only the deployed branch itself may run in the environment the role trusts
    # (protected branches would admit whatever a protection rule matches).
    assert environment["deploymentBranchPolicy"] == {"protectedBranches": False, "customBranchPolicies": True}
    policy = plan.named("github-environment-production-branch").inputs
    assert (policy["repository"], policy["environment"], policy["branchPattern"]) == ("app", "production", "main")
    assert environment["canAdminsBypass"] is False


def test_workflow_goes_to_its_own_branch_and_a_pull_request_into_the_protected_branch(plan):
    content = workflow_text("main", "production")
    branch = plan.named("github-workflow-branch")
    assert branch.inputs == {"repository": "app", "branch": update_branch(content), "sourceBranch": "main"}
    assert update_branch(content).startswith(UPDATE_BRANCH_PREFIX) and update_branch(content) != "main"
    workflow = plan.named("github-deploy-workflow").inputs
    assert workflow["file"] == WORKFLOW_PATH and workflow["branch"] == update_branch(content)
    assert workflow["content"] == content and "environment: production" in content
    pr = plan.named("github-workflow-pr").inputs
    assert (pr["baseRepository"], pr["baseRef"], pr["headRef"]) == ("app", "main", update_branch(content))
    assert "Review and merge it" in pr["body"]
    # A superseded branch, commit or pull request is kept, never deleted by a later `pulumi up`.
    assert all(plan.named(n).options["retainOnDelete"] for n in ("github-workflow-branch", "github-deploy-workflow", "github-workflow-pr"))


def test_nothing_commits_to_the_protected_branch(plan):
    files = plan.of_type("github:index/repositoryFile:RepositoryFile")
    assert files and all(f.inputs["branch"] != "main" for f in files), [f.inputs["branch"] for f in files]
    assert not plan.of_type("github:index/repositoryFiles:RepositoryFiles")


def test_a_new_workflow_version_opens_a_new_branch_and_pull_request():
    assert update_branch(workflow_text("main")) != update_branch(workflow_text("release"))
    assert update_branch(workflow_text("main")) == update_branch(workflow_text("main"))


def test_failure_alerts_reach_the_configured_emails(pipeline):
    rule = json.loads(pipeline.named("delivery-failed").inputs["eventPattern"])
    assert rule["detail"] == {"pipeline": ["MatsightDeployPipeline"], "state": ["FAILED"]}
    subs = pipeline.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert [(s.inputs["protocol"], s.inputs["endpoint"]) for s in subs] == [("email", "ops@example.com")]
    policy = json.loads(pipeline.named("delivery-alerts-policy").inputs["policy"])["Statement"][0]
    assert policy["Principal"] == {"Service": "events.amazonaws.com"}
    assert policy["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(":rule/delivery-failed-computed")


def test_outputs(plan):
    out = plan.outputs["pipeline"]
    assert out["name"] == "MatsightDeployPipeline" and out["buildLogGroup"] == "/devprod/prod/codebuild"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r["devprod:pipeline"].update(repository="not-a-repo"), "pipeline.repository: 'not-a-repo' is not OWNER/REPO"),
        (lambda r: r["devprod:pipeline"].update(branch="release/*"), "no wildcards"),
        (lambda r: r["devprod:pipeline"].update(notifyEmails=["ops"]), "are not e-mail addresses"),
        (lambda r: r["devprod:pipeline"].update(oidcProviderArn="arn:aws:iam::1:oidc-provider/x"), "is not the ARN"),
        (lambda r: r["devprod:pipeline"].update(testCommands=["npm test; rm -rf /"]), "must be one line"),
        (lambda r: r.update({"github:owner": "someone-else"}), "github:owner: 'someone-else' must be the owner"),
        (lambda r: r.pop("devprod:production"), "pipeline: needs devprod:production"),
        (lambda r: r["devprod:pipeline"].update(deployEnvironment="prod*"),
         "pipeline.deployEnvironment: 'prod*' is not a GitHub environment name ([A-Za-z0-9_.-], no wildcards)"),
        (lambda r: r["devprod:pipeline"].update(deployEnvironment="a:b"), "is not a GitHub environment name"),
    ],
)
def test_bad_pipeline_config(prod_raw, change, expected):
    change(prod_raw)
    with pytest.raises(ConfigError) as info:
        parse_stack_config(prod_raw, project="devprod", stack="prod")
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_workflow_follows_the_configured_branch_and_environment():
    text = workflow_text("release", "prod-deploy")
    assert "    branches: [release]\n" in text and "branches: [main]" not in text
    assert "    environment: prod-deploy\n" in text and "environment: production" not in text


# ------------------------------------------------------------------ bake, rollback, deploy window (#15)

SERVICE_ALARMS = ("prod-production-5xx", "prod-production-unhealthy")


def _release_stage(plan):
    return plan.named("delivery-pipeline").inputs["stages"][2]


def _with_pipeline(raw, **pipeline):
    raw = json.loads(json.dumps(raw))
    raw["devprod:pipeline"].update(pipeline)
    return raw


@pytest.fixture(scope="module")
def prod_raw_config():
    from devprod.plan import load_stack_raw

    return load_stack_raw(STACKS, "prod")[0]


def test_release_bakes_on_the_alarms_and_rolls_back_on_failure(prod_raw_config):
    raw = _with_pipeline(prod_raw_config, bakeMinutes=15, bakeAlarms=["team-latency"])
    plan = pipeline_plan(raw, bake_alarms=SERVICE_ALARMS)
    release = _release_stage(plan)
    assert release["onFailure"] == {"result": "ROLLBACK"}
    (condition,) = release["onSuccess"]["conditions"]
    assert condition["result"] == "ROLLBACK"
    assert [(r["ruleTypeId"]["provider"], r["configuration"]) for r in condition["rules"]] == [
        ("CloudWatchAlarm", {"AlarmName": name, "WaitTime": "15"}) for name in (*SERVICE_ALARMS, "team-latency")
    ]
    assert "beforeEntry" not in release
    # The pipeline role reads exactly those alarms, nothing else in CloudWatch.
    role_policy = json.loads(plan.named("delivery-pipeline-role-policy").inputs["policy"])
    (watch,) = [st for st in role_policy["Statement"] if st["Sid"] == "WatchBakeAlarms"]
    assert watch["Action"] == "cloudwatch:DescribeAlarms"
    assert [arn.rsplit(":", 1)[-1] for arn in watch["Resource"]] == [*SERVICE_ALARMS, "team-latency"]


def test_no_alarms_or_zero_minutes_means_no_bake_but_still_rollback(prod_raw_config):
    for raw, alarms in ((prod_raw_config, ()), (_with_pipeline(prod_raw_config, bakeMinutes=0), SERVICE_ALARMS)):
        release = _release_stage(pipeline_plan(raw, bake_alarms=alarms))
        assert "onSuccess" not in release and release["onFailure"] == {"result": "ROLLBACK"}
    role_policy = json.loads(pipeline_plan(prod_raw_config).named("delivery-pipeline-role-policy").inputs["policy"])
    assert "WatchBakeAlarms" not in {st["Sid"] for st in role_policy["Statement"]}


def test_a_deploy_window_gates_entry_into_release(prod_raw_config):
    window = {"cron": "* * 9-16 ? * MON-THU *", "timeZone": "Europe/Berlin"}
    release = _release_stage(pipeline_plan(_with_pipeline(prod_raw_config, deployWindow=window, batch=2)))
    (condition,) = release["beforeEntry"]["conditions"]
    (rule,) = condition["rules"]
    assert condition["result"] == "FAIL" and rule["ruleTypeId"]["provider"] == "DeploymentWindow"
    assert rule["configuration"] == {"Cron": "* * 9-16 ? * MON-THU *", "TimeZone": "Europe/Berlin"}


def test_the_release_function_records_the_live_release_in_one_parameter_only(pipeline):
    policy = json.loads(pipeline.named("delivery-release-role-policy").inputs["policy"])
    ssm = [st for st in policy["Statement"] if any(a.startswith("ssm:") and "Parameter" in a for a in
                                                   ([st["Action"]] if isinstance(st["Action"], str) else st["Action"]))]
    assert ssm == [{"Sid": "RecordTheLiveRelease", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"],
                    "Resource": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/live-release"}]


@pytest.mark.parametrize(
    "pipeline_keys, expected",
    [
        ({"batch": 0}, "pipeline.batch: Input should be greater than or equal to 1"),
        ({"bakeMinutes": 61}, "pipeline.bakeMinutes: Input should be less than or equal to 60"),
        ({"bakeAlarms": ["ok", "bad\nname"]}, "are not CloudWatch alarm names"),
        ({"bakeAlarms": ["devprod-prod-production-5xx-rate"]}, "devprod-* alarms are the service's own, already watched"),
        ({"deployWindow": {"cron": "cron(0 9 * * ? *)"}}, "write the fields alone, without cron( )"),
        ({"deployWindow": {"cron": "* 0 25 ? * MON *"}}, "pipeline.deployWindow.cron: '* 0 25 ? * MON *' is not a deployment window: hours '25' is not '*', a value or a range of 0-23"),
        ({"deployWindow": {"cron": "* * 9-16 ? * MON-THU *", "timeZone": "Mars/Olympus"}}, "is not an IANA time zone"),
    ],
)
def test_bad_rollout_settings_are_one_line_naming_the_key(prod_raw_config, pipeline_keys, expected):
    with pytest.raises(ConfigError) as error:
        parse_stack_config(_with_pipeline(prod_raw_config, **pipeline_keys), project="devprod", stack="prod")
    assert len(error.value.problems) == 1 and expected in error.value.problems[0], error.value.problems


def test_a_bake_alarm_going_off_is_mailed_through_the_alerts_topic(prod_raw_config):
    plan = pipeline_plan(prod_raw_config, bake_alarms=SERVICE_ALARMS)
    pattern = json.loads(plan.named("delivery-alarm").inputs["eventPattern"])
    assert pattern == {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
                       "detail": {"alarmName": list(SERVICE_ALARMS), "state": {"value": ["ALARM"]}}}
    targets = {r.name: r.inputs for r in plan.of_type("aws:cloudwatch/eventTarget:EventTarget")}
    assert set(targets) == {"delivery-failed-to-alerts", "delivery-alarm-to-alerts"}
    (publish,) = json.loads(plan.named("delivery-alerts-policy").inputs["policy"])["Statement"]
    assert len(publish["Condition"]["ArnEquals"]["aws:SourceArn"]) == 2  # both rules, nothing else
    plain = pipeline_plan(prod_raw_config)  # no alarms: one rule, as before
    assert [r.name for r in plain.of_type("aws:cloudwatch/eventRule:EventRule")] == ["delivery-failed"]
    (only,) = json.loads(plain.named("delivery-alerts-policy").inputs["policy"])["Statement"]
    assert isinstance(only["Condition"]["ArnEquals"]["aws:SourceArn"], str)
