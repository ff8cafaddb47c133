"""CiIdentities under mocks (S14, S15, S27): one exact subject per role, a read-only preview role,
per-stack up roles that cannot reach the other stack, and the `devprod:ci` config checks."""

from __future__ import annotations

import copy
import fnmatch
import json

import pytest

from components.ci_identities import POWER_USER, READ_ONLY, StateBackend, preview_statements, up_statements
from components.config import ConfigError, parse_stack_config
from policy import iam
from tests.conftest import plan_of

PROVIDER = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
INFRA = "example-org/infra"
DEV_KEY = "arn:aws:kms:eu-central-1:123456789012:key/11111111-2222-3333-4444-555555555555"
PROD_KEY = "arn:aws:kms:eu-central-1:123456789012:key/66666666-7777-8888-9999-000000000000"
STATE = "arn:aws:s3:::example-org-devprod-state"
SUBJECTS = {
    "ci-preview-role": f"repo:{INFRA}:pull_request",
    "ci-up-dev-role": f"repo:{INFRA}:environment:dev",
    "ci-up-prod-role": f"repo:{INFRA}:environment:production",
    "ci-drift-role": f"repo:{INFRA}:environment:drift",
}


@pytest.fixture
def plan(prod_plan):
    return prod_plan


def statements(plan, name):
    return json.loads(plan.named(name).inputs["policy"])["Statement"]


def attached(plan, role):
    prefix = role.removesuffix("-role") + "-attach-"
    return sorted(a.inputs["policyArn"] for a in plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.name.startswith(prefix))


# ------------------------------------------------------------------ a small evaluator for Deny statements


def _matches(patterns, value):
    return any(fnmatch.fnmatchcase(value, str(p)) for p in iam.as_list(patterns))


def _condition_holds(condition, context):
    for operator, block in (condition or {}).items():
        for key, expected in block.items():
            actual = context.get(key)
            if operator == "Null" and (actual is None) != (expected == "true"):
                return False
            if operator == "StringEquals" and actual not in iam.as_list(expected):
                return False
            if operator == "StringNotEquals" and (actual is None or actual in iam.as_list(expected)):
                return False
    return True


def denied(policy, action, resource, context=None):
    """Whether an explicit Deny in `policy` refuses `action` on `resource` (the shapes devprod writes)."""
    for s in policy:
        if s["Effect"] != "Deny":
            continue
        action_hit = _matches(s["Action"], action) if "Action" in s else not _matches(s["NotAction"], action)
        resource_hit = _matches(s["Resource"], resource) if "Resource" in s else not _matches(s["NotResource"], resource)
        if action_hit and resource_hit and _condition_holds(s.get("Condition"), context or {}):
            return True
    return False


# ------------------------------------------------------------------ trust


def test_each_ci_role_trusts_exactly_one_subject_for_at_most_an_hour(plan):
    roles = {r.name: r for r in plan.of_type("aws:iam/role:Role") if r.name.startswith("ci-")}
    assert set(roles) == set(SUBJECTS)
    for name, subject in SUBJECTS.items():
        trust = roles[name].inputs["assumeRolePolicy"]
        assert iam.github_trust_problems(trust, provider_arn=PROVIDER, subject=subject) == [], name
        assert iam.duplicate_keys(trust) == [], name
        assert roles[name].inputs["maxSessionDuration"] == 3600, name


def test_the_account_has_one_github_provider_shared_by_ci_and_the_pipeline(plan):
    (provider,) = plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider.name == "delivery-github-oidc" and provider.computed["arn"] == PROVIDER


def test_without_a_pipeline_ci_creates_the_provider(prod_raw):
    prod_raw.pop("devprod:pipeline")
    plan = plan_of(prod_raw)
    (provider,) = plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider.name == "ci-github-oidc"
    trust = plan.named("ci-up-prod-role").inputs["assumeRolePolicy"]
    assert iam.github_trust_problems(trust, provider_arn=provider.computed["arn"], subject=SUBJECTS["ci-up-prod-role"]) == []


@pytest.mark.parametrize("where", ["devprod:ci", "devprod:pipeline"])
def test_an_existing_provider_is_used_by_arn(prod_raw, where):
    existing = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com"
    prod_raw[where]["oidcProviderArn"] = existing
    plan = plan_of(prod_raw)
    assert not plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    for name, subject in SUBJECTS.items():
        trust = plan.named(name).inputs["assumeRolePolicy"]
        assert iam.github_trust_problems(trust, provider_arn=existing, subject=subject) == [], name


# ------------------------------------------------------------------ preview and drift


def test_preview_role_reads_the_dev_state_and_decrypts_only_its_key(plan):
    assert statements(plan, "ci-preview-policy") == [
        {"Sid": "ListState", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": STATE},
        {"Sid": "ReadPreviewedState", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [f"{STATE}/.pulumi/meta.yaml", f"{STATE}/.pulumi/stacks/devprod/dev.*"]},
        {"Sid": "DecryptPreviewedSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": DEV_KEY},
        {"Sid": "ReadPublicAmiParameters", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
         "Resource": "arn:aws:ssm:eu-central-1:*:parameter/aws/service/*"},
    ]
    assert attached(plan, "ci-preview-role") == []
    text = json.dumps(statements(plan, "ci-preview-policy"))
    assert PROD_KEY not in text and "/prod." not in text


def test_drift_role_reads_configuration_but_no_data(plan):
    policy = statements(plan, "ci-drift-policy")
    assert attached(plan, "ci-drift-role") == [READ_ONLY]
    allowed = {a for s in policy if s["Effect"] == "Allow" for a in iam.as_list(s["Action"])}
    assert allowed == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}
    assert denied(policy, "s3:GetObject", "arn:aws:s3:::artifacts-bucket-computed/releases/abc.tar.gz")
    assert not denied(policy, "s3:GetObject", f"{STATE}/.pulumi/stacks/devprod/prod.json")
    assert denied(policy, "ssm:GetParameter", "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app/DB")
    assert not denied(policy, "ssm:GetParameter", "arn:aws:ssm:eu-central-1::parameter/aws/service/ami-x")
    assert denied(policy, "logs:GetLogEvents", "arn:aws:logs:eu-central-1:123456789012:log-group:/devprod/prod/deploy")


# ------------------------------------------------------------------ up roles


def test_up_roles_are_power_users_with_stack_iam(plan):
    for stack in ("dev", "prod"):
        assert attached(plan, f"ci-up-{stack}-role") == [POWER_USER]
        (manage,) = [s for s in statements(plan, f"ci-up-{stack}-policy") if s["Effect"] == "Allow"]
        assert manage["Sid"] == "ManageStackIam" and "iam:CreateUser" not in manage["Action"]
        assert not any(a.endswith("*") for a in manage["Action"])
    prod_iam = statements(plan, "ci-up-prod-policy")[0]
    dev_iam = statements(plan, "ci-up-dev-policy")[0]
    assert "iam:CreateOpenIDConnectProvider" in prod_iam["Action"] and PROVIDER in prod_iam["Resource"]
    assert "iam:CreateOpenIDConnectProvider" not in dev_iam["Action"] and PROVIDER not in dev_iam["Resource"]


PROD_INSTANCE = "arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc"


@pytest.mark.parametrize(
    "action, resource, context",
    [
        ("ec2:TerminateInstances", PROD_INSTANCE, {"aws:ResourceTag/devprod:stack": "prod"}),
        ("iam:UpdateAssumeRolePolicy", "arn:aws:iam::123456789012:role/ci-up-prod-role-x", {"aws:ResourceTag/devprod:stack": "prod"}),
        ("ssm:SendCommand", "arn:aws:ssm:eu-central-1:123456789012:document/production-deploy-x", {"aws:ResourceTag/devprod:stack": "prod"}),
        ("ec2:RunInstances", PROD_INSTANCE, {"aws:RequestTag/devprod:stack": "prod"}),
        ("s3:PutObject", f"{STATE}/.pulumi/stacks/devprod/prod.json", {}),
        ("s3:GetObject", f"{STATE}/.pulumi/stacks/devprod/prod.json", {}),
        ("s3:PutObject", f"{STATE}/.pulumi/locks/organization/devprod/prod/1.json", {}),
        ("s3:DeleteObject", f"{STATE}/.pulumi/history/devprod/prod/prod-1.history.json", {}),
        ("kms:Decrypt", PROD_KEY, {}),
        ("s3:PutObject", "arn:aws:s3:::artifacts-bucket-computed/releases/abc.tar.gz", {}),
        ("s3:PutBucketPolicy", "arn:aws:s3:::artifacts-bucket-computed", {}),
        ("ssm:PutParameter", "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app/DATABASE_URL", {}),
        ("logs:DeleteLogGroup", "arn:aws:logs:eu-central-1:123456789012:log-group:/devprod/prod/deploy", {}),
        ("sts:AssumeRole", "arn:aws:iam::123456789012:role/anything", {}),
        ("s3:DeleteObjectVersion", f"{STATE}/.pulumi/stacks/devprod/dev.json", {}),
        ("s3:PutBucketVersioning", STATE, {}),
        ("kms:ScheduleKeyDeletion", DEV_KEY, {}),
        ("cloudtrail:StopLogging", "arn:aws:cloudtrail:eu-central-1:123456789012:trail/org", {}),
    ],
)
def test_dev_up_role_cannot_reach_production(plan, action, resource, context):
    assert denied(statements(plan, "ci-up-dev-policy"), action, resource, context)


@pytest.mark.parametrize(
    "action, resource, context",
    [
        ("ec2:RunInstances", "arn:aws:ec2:eu-central-1:123456789012:instance/i-0dev", {"aws:RequestTag/devprod:stack": "dev"}),
        ("ec2:TerminateInstances", "arn:aws:ec2:eu-central-1:123456789012:instance/i-0dev", {"aws:ResourceTag/devprod:stack": "dev"}),
        ("ec2:DescribeImages", "*", {}),
        ("s3:PutObject", f"{STATE}/.pulumi/stacks/devprod/dev.json", {}),
        ("s3:PutObject", f"{STATE}/.pulumi/locks/organization/devprod/dev/1.json", {}),
        ("kms:Decrypt", DEV_KEY, {}),
        ("kms:GenerateDataKey", DEV_KEY, {}),
        ("ssm:GetParameter", "arn:aws:ssm:eu-central-1::parameter/aws/service/ami-amazon-linux-latest/x", {}),
    ],
)
def test_dev_up_role_keeps_what_up_of_dev_needs(plan, action, resource, context):
    assert not denied(statements(plan, "ci-up-dev-policy"), action, resource, context)


def test_prod_up_role_cannot_reach_dev_and_manages_prod(plan):
    policy = statements(plan, "ci-up-prod-policy")
    assert denied(policy, "kms:Decrypt", DEV_KEY)
    assert denied(policy, "s3:PutObject", f"{STATE}/.pulumi/stacks/devprod/dev.json")
    assert denied(policy, "ec2:TerminateInstances", PROD_INSTANCE, {"aws:ResourceTag/devprod:stack": "dev"})
    assert not denied(policy, "ec2:TerminateInstances", PROD_INSTANCE, {"aws:ResourceTag/devprod:stack": "prod"})
    assert not denied(policy, "s3:PutObject", f"{STATE}/.pulumi/stacks/devprod/prod.json")
    assert not denied(policy, "kms:Decrypt", PROD_KEY)
    assert not denied(policy, "s3:PutObject", "arn:aws:s3:::artifacts-bucket-computed/releases/abc.tar.gz")


def test_policies_are_pure_functions_of_the_settings():
    backend = StateBackend("b", "devprod")
    assert backend.stack_objects("prod") == [
        "arn:aws:s3:::b/.pulumi/stacks/devprod/prod.*",
        "arn:aws:s3:::b/.pulumi/history/devprod/prod/*",
        "arn:aws:s3:::b/.pulumi/backups/devprod/prod/*",
        "arn:aws:s3:::b/.pulumi/locks/organization/devprod/prod/*",
    ]
    keys = {"dev": DEV_KEY, "prod": PROD_KEY}
    assert preview_statements(backend, DEV_KEY, "eu-central-1")[2]["Resource"] == DEV_KEY
    dev = up_statements("dev", backend=backend, secrets_keys=keys, account="1", region="r", other_buckets=["arn:aws:s3:::x"])
    assert denied(dev, "s3:GetObject", "arn:aws:s3:::x/anything")
    assert not denied(up_statements("prod", backend=backend, secrets_keys=keys, account="1", region="r"), "s3:GetObject", "arn:aws:s3:::x/a")


# ------------------------------------------------------------------ outputs


def test_outputs_name_the_roles_and_the_actions_variables(plan):
    ci = plan.outputs["ci"]
    assert ci["repository"] == INFRA
    assert ci["upRoleArns"] == {
        "dev": "arn:aws:iam::123456789012:role/ci-up-dev-role-computed",
        "prod": "arn:aws:iam::123456789012:role/ci-up-prod-role-computed",
    }
    assert ci["actionsVariables"] == {
        "AWS_REGION": "eu-central-1",
        "PULUMI_BACKEND_URL": "s3://example-org-devprod-state?region=eu-central-1",
        "DEVPROD_PREVIEW_ROLE_ARN": "arn:aws:iam::123456789012:role/ci-preview-role-computed",
        "DEVPROD_DRIFT_ROLE_ARN": "arn:aws:iam::123456789012:role/ci-drift-role-computed",
        "DEVPROD_DEV_UP_ROLE_ARN": ci["upRoleArns"]["dev"],
        "DEVPROD_PROD_UP_ROLE_ARN": ci["upRoleArns"]["prod"],
        "DEVPROD_APP_OWNER": "example-org",
        "DEVPROD_APP_REPOSITORY": "app",
    }


def test_children_are_parented_and_named_after_the_component(plan):
    component = next(r for r in plan.resources if r.type == "devprod:delivery:CiIdentities")
    children = plan.children_of(component.urn)
    assert len(children) == 11 and all(c.name.startswith("ci-") for c in children)
    assert all(c.inputs["tags"]["devprod:stack"] == "prod" for c in children if c.type == "aws:iam/role:Role")


# ------------------------------------------------------------------ config


def ci_problems(raw, stack="prod"):
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, project="devprod", stack=stack)
    return info.value.problems


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c.update(repository="infra"), "ci.repository: 'infra' is not OWNER/REPO"),
        (lambda c: c.update(repository="example-org/app"),
         "ci.repository: 'example-org/app' is the app repository; the infrastructure repository must be another one "
         "(both trust a production environment)"),
        (lambda c: c.update(stateBucket="s3://state"),
         "ci.stateBucket: 's3://state' is not an S3 bucket name (the Pulumi state bucket, without s3://)"),
        (lambda c: c["secretsKeys"].pop("prod"),
         "ci.secretsKeys: needs exactly one key ARN per stack ['dev', 'prod'] (missing ['prod'], unknown [])"),
        (lambda c: c["secretsKeys"].update(staging=DEV_KEY),
         "ci.secretsKeys: needs exactly one key ARN per stack ['dev', 'prod'] (missing [], unknown ['staging'])"),
        (lambda c: c["secretsKeys"].update(dev="alias/devprod-pulumi"),
         "ci.secretsKeys: {'dev': 'alias/devprod-pulumi'} are not KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/UUID)"),
        (lambda c: c["secretsKeys"].update(dev=PROD_KEY),
         "ci.secretsKeys: two stacks share a secrets key; the dev up role could then decrypt prod's secrets"),
        (lambda c: c.update(oidcProviderArn="arn:aws:iam::1:oidc-provider/x"),
         "ci.oidcProviderArn: 'arn:aws:iam::1:oidc-provider/x' is not the ARN of an account's "
         "token.actions.githubusercontent.com OIDC provider"),
        (lambda c: c.update(previewStacks=["prod"]), "ci.previewStacks: unknown key (typo?)"),
    ],
)
def test_bad_ci_config(prod_raw, change, expected):
    change(prod_raw["devprod:ci"])
    assert expected in ci_problems(prod_raw)


def test_ci_belongs_in_the_prod_stack(prod_raw):
    assert ci_problems(prod_raw, stack="dev") == [
        "ci: belongs in the prod stack, not 'dev' (a role that can change the CI roles must itself need production approval)"
    ]


def test_ci_and_pipeline_name_the_same_provider(prod_raw):
    prod_raw["devprod:ci"]["oidcProviderArn"] = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com"
    prod_raw["devprod:pipeline"]["oidcProviderArn"] = "arn:aws:iam::444455556666:oidc-provider/token.actions.githubusercontent.com"
    (problem,) = ci_problems(prod_raw)
    assert problem.startswith("ci.oidcProviderArn: ") and problem.endswith("an account has one GitHub OIDC provider")


def test_ci_config_may_arrive_as_json_text(prod_raw):
    prod_raw["devprod:ci"] = json.dumps(copy.deepcopy(prod_raw["devprod:ci"]))
    config = parse_stack_config(prod_raw, project="devprod", stack="prod")
    assert config.ci is not None and config.ci.secrets_keys == {"dev": DEV_KEY, "prod": PROD_KEY}
