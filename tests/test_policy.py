"""Policy rules: each compliant as planned, each broken by one property with an exact message;
the CrossGuard policies report exactly what the predicates report."""

from __future__ import annotations

import copy
import json

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs, ResourceValidationPolicy

from policy.crossguard import policies, to_policy
from policy.rules import RULES, violations
from tests.conftest import ROOT


@pytest.fixture
def resources(dev_plan, prod_plan):
    return {r.name: r for plan in (dev_plan, prod_plan) for r in plan.resources}


def _set(path, value):
    def change(props, options):
        target = props
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


def _policy(key, fn):
    def change(props, options):
        doc = json.loads(props[key])
        fn(doc)
        props[key] = json.dumps(doc)
    return change


def _option(key, value):
    def change(props, options):
        options[key] = value
    return change


def _text(key, fn):
    """Edit a property's text as written (duplicate keys and YAML do not survive a JSON round trip)."""
    def change(props, options):
        props[key] = fn(props[key])
    return change


def _condition(fn):
    return _policy("assumeRolePolicy", lambda d: fn(d["Statement"][0]["Condition"]))


GITHUB_SUB = "token.actions.githubusercontent.com:sub"
GITHUB_AUD = "token.actions.githubusercontent.com:aud"
SUBJECT_FORMS = "(repo:OWNER/REPO:ref:refs/heads/BRANCH, repo:OWNER/REPO:environment:NAME or repo:OWNER/REPO:pull_request)"
DEPLOY_YML = ".github/workflows/deploy.yml"
CHECKOUT = "actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09"

CASES = [
    ("alice-box", _set("metadataOptions.httpTokens", "optional"), "S1: metadataOptions.httpTokens must be 'required' (IMDSv2), got 'optional'"),
    ("alice-box", _set("metadataOptions.httpPutResponseHopLimit", 2), "S1: metadataOptions.httpPutResponseHopLimit must be 1, got 2"),
    ("production-host", _set("rootBlockDevice.encrypted", False), "S2: rootBlockDevice.encrypted must be true"),
    ("alice-home", _set("encrypted", False), "S2: encrypted must be true"),
    ("alice-home", _set("kmsKeyId", "alias/aws/ebs"), "S2: kmsKeyId must be a KMS key ARN, not 'alias/aws/ebs' (an alias forces a replacement on every update)"),
    ("carol-sg", _set("ingress.0.cidrBlocks", ["0.0.0.0/0"]), "S3: ingress[0] opens port 22 to 0.0.0.0/0"),
    ("carol-sg", _set("ingress.0.ipv6CidrBlocks", ["0::0/0"]), "S3: ingress[0] opens port 22 to 0::0/0"),
    ("carol-sg", _set("ingress.0.description", ""), "S3: ingress[0] has no description"),
    ("production-sg", _set("ingress.0.fromPort", 0), "S3: ingress[0] opens port 22 to 0.0.0.0/0"),
    ("production-host", _set("keyName", "ops"), "S4: the production host must have no key pair, got keyName 'ops'"),
    ("production-sg", _set("ingress.0.fromPort", 22), "S4: ingress[0] admits SSH to production; administer it through SSM"),
    ("alice-box", _set("userData", "#!/bin/bash\nexport AWS_KEY=AKIAABCDEFGHIJKLMNOP\n"), "S7: userData contains something secret-looking (AKIAABCDEFGH...)"),
    ("alice-box", _set("userData", "#" * 16385), "S7: userData is 16385 bytes; EC2 allows 16384"),
    ("artifacts-public-access", _set("restrictPublicBuckets", False), "S8: restrictPublicBuckets must be true"),
    ("artifacts-ownership", _set("rule.objectOwnership", "ObjectWriter"), "S8: rule.objectOwnership must be BucketOwnerEnforced, got 'ObjectWriter'"),
    ("artifacts-versioning", _set("versioningConfiguration.status", "Suspended"), "S8: versioningConfiguration.status must be Enabled, got 'Suspended'"),
    ("production-deploy-logs", _set("retentionInDays", 0), "S9: retentionInDays must be set (logs otherwise never expire)"),
    ("delivery-build", _set("environment.privilegedMode", True), "S10: environment.privilegedMode must be false"),
    ("delivery-build", _set("environment.environmentVariables.0.name", "DB_PASSWORD"), "S10: environment variable 'DB_PASSWORD' looks secret; use type PARAMETER_STORE"),
    ("delivery-build", _set("logsConfig.cloudwatchLogs.status", "DISABLED"), "S10: logsConfig.cloudwatchLogs must be enabled"),
    ("delivery-pipeline", _set("pipelineType", "V1"), "S11: pipelineType must be V2, got 'V1'"),
    ("delivery-pipeline", _set("executionMode", "SUPERSEDED"), "S11: executionMode must be QUEUED, got 'SUPERSEDED'"),
    ("delivery-github-policy", _policy("policy", lambda d: d["Statement"][1].update(Action="codepipeline:*")), "S12: policy Statement[1]: action 'codepipeline:*' allows every action"),
    ("delivery-github-policy", _policy("policy", lambda d: d["Statement"][0].update(Resource="*")), "S12: policy Statement[0]: Resource '*' for scopable actions ['s3:PutObject']"),
    ("delivery-pipeline-role", _policy("assumeRolePolicy", lambda d: d["Statement"][0].pop("Condition")), "S13: Statement[0]: no aws:SourceAccount/aws:SourceArn condition"),
    ("delivery-pipeline-role", _policy("assumeRolePolicy", lambda d: d["Statement"][0]["Principal"].update(Service=["codepipeline.amazonaws.com", "codebuild.amazonaws.com"])), "S13: trusts ['codebuild.amazonaws.com', 'codepipeline.amazonaws.com']; exactly one service principal allowed"),
    ("delivery-github-role", _condition(lambda c: c["StringEquals"].update({GITHUB_SUB: "repo:example-org/*"})), f"S14: {GITHUB_SUB} 'repo:example-org/*' is not one exact subject {SUBJECT_FORMS}"),
    ("delivery-github-role", _condition(lambda c: c["StringEquals"].pop(GITHUB_SUB)), f"S14: missing {GITHUB_SUB}"),
    ("delivery-github-role", _condition(lambda c: c.update(StringLike=c.pop("StringEquals"))), "S14: condition must be exactly one StringEquals block, got ['StringLike']"),
    ("ci-preview-role", _condition(lambda c: c["StringEquals"].update({GITHUB_SUB: "repo:example-org/infra:*"})), f"S14: {GITHUB_SUB} 'repo:example-org/infra:*' is not one exact subject {SUBJECT_FORMS}"),
    ("ci-up-prod-role", _condition(lambda c: c["StringEquals"].update({GITHUB_SUB: "repo:example-org/infra:ref:refs/heads/*"})), f"S14: {GITHUB_SUB} 'repo:example-org/infra:ref:refs/heads/*' is not one exact subject {SUBJECT_FORMS}"),
    ("ci-up-dev-role", _condition(lambda c: c["StringEquals"].pop(GITHUB_AUD)), f"S14: missing {GITHUB_AUD}"),
    ("ci-drift-role", _condition(lambda c: c.update({"ForAllValues:StringEquals": {GITHUB_SUB: ["x"]}})), "S14: condition must be exactly one StringEquals block, got ['ForAllValues:StringEquals', 'StringEquals']"),
    ("ci-preview-role", _condition(lambda c: c["StringEquals"].update({GITHUB_SUB: ["repo:example-org/infra:pull_request", "repo:example-org/infra:environment:production"]})), f"S14: {GITHUB_SUB} names 2 subjects ['repo:example-org/infra:pull_request', 'repo:example-org/infra:environment:production']; exactly one allowed, as a string"),
    ("ci-up-prod-role", _text("assumeRolePolicy", lambda t: t.replace(f'"{GITHUB_AUD}"', f'"{GITHUB_SUB}": "repo:example-org/*", "{GITHUB_AUD}"')), f"S14: duplicate key '{GITHUB_SUB}'"),
    ("ci-up-prod-role", _policy("assumeRolePolicy", lambda d: d["Statement"].append(dict(d["Statement"][0]))), "S14: a GitHub trust must have exactly one statement"),
    ("delivery-github-role", _set("maxSessionDuration", 7200), "S15: maxSessionDuration 7200 exceeds 3600 seconds; a GitHub-assumed role's sessions last at most an hour"),
    ("ci-up-prod-role", _set("maxSessionDuration", 43200), "S15: maxSessionDuration 43200 exceeds 3600 seconds; a GitHub-assumed role's sessions last at most an hour"),
    ("delivery-release-role-policy", _policy("policy", lambda d: d["Statement"][3]["Resource"].append("arn:aws:ssm:eu-central-1::document/AWS-RunShellScript")), "S16: policy grants ssm:SendCommand with AWS-RunShellScript; only the deploy document"),
    ("artifacts-tls-only", _policy("policy", lambda d: d["Statement"][1]["Condition"]["Null"].update({"s3:if-none-match": "false"})), "S26: the bucket policy must deny s3:PutObject on releases/* without If-None-Match (a write that could replace a release)"),
    ("artifacts-tls-only", _policy("policy", lambda d: d["Statement"].pop(1)), "S26: the bucket policy must deny s3:PutObject on releases/* without If-None-Match (a write that could replace a release)"),
    ("artifacts-tls-only", _policy("policy", lambda d: d["Statement"][3].update(Action="s3:DeleteObject")), "S26: the bucket policy must deny s3:DeleteObjectVersion on releases/* to everyone"),
    ("artifacts-tls-only", _policy("policy", lambda d: d["Statement"].pop(2)), "S26: the bucket policy must deny s3:PutObject on releases/* to every principal but the Release role (ArnNotEquals aws:PrincipalArn)"),
    ("artifacts-tls-only", _policy("policy", lambda d: d["Statement"][2]["Condition"]["ArnNotEquals"].update({"aws:PrincipalArn": "*"})), "S26: the bucket policy must deny s3:PutObject on releases/* to every principal but the Release role (ArnNotEquals aws:PrincipalArn)"),
    ("production-deploy", _policy("content", lambda d: d["parameters"].pop("checksum")), "S26: parameter 'checksum' must exist with allowedPattern '^([0-9a-f]{64})?$', got None"),
    ("production-deploy", _policy("content", lambda d: d["parameters"]["checksum"].update(allowedPattern="^.*$")), "S26: parameter 'checksum' must exist with allowedPattern '^([0-9a-f]{64})?$', got '^.*$'"),
    ("delivery-build", _set("environment.environmentVariables.0.type", "PARAMETER_STORE"), "S26: environment variable 'TEST_COMMANDS' of type PARAMETER_STORE hands a secret to repository code"),
    ("production-deploy", _policy("content", lambda d: d["parameters"]["release"].pop("allowedPattern")), "S18: parameter 'release' has no allowedPattern"),
    ("production-deploy", _policy("content", lambda d: d["parameters"]["action"].pop("interpolationType")), "S18: parameter 'action' must use interpolationType ENV_VAR"),
    ("production-deploy", _policy("content", lambda d: d["mainSteps"][0]["inputs"]["runCommand"].append("echo {{release}}")), "S18: mainSteps paste {{ parameters }} into shell text; read SSM_<name> variables instead"),
    ("production-deploy", _policy("content", lambda d: d.update(schemaVersion="1.2")), "S18: schemaVersion must be 2.2, got '1.2'"),
    ("github-deploy-workflow", _text("content", lambda t: t.replace("on:\n  push:", "on:\n  pull_request:\n  push:").replace("    environment: production\n", "")), f"S27: {DEPLOY_YML}: job 'deploy' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
    ("github-deploy-workflow", _text("content", lambda t: t.replace("on:\n  push:", "on:\n  pull_request_target:\n  push:").replace("    environment: production\n", "    env:\n      TOKEN: ${{ secrets.DEPLOY_TOKEN }}\n")), f"S27: {DEPLOY_YML}: job 'deploy' can run for a pull request without an environment and reads a secret"),
    ("github-deploy-workflow", _text("content", lambda t: t.replace(CHECKOUT, "actions/checkout@v5")), f"S28: {DEPLOY_YML}: uses 'actions/checkout@v5' is not pinned to a full commit SHA"),
    ("github-deploy-workflow", _text("content", lambda t: t.replace(f"{CHECKOUT} # v5.1.0", CHECKOUT)), f"S28: {DEPLOY_YML}: uses '{CHECKOUT}' has no '# vX.Y.Z' comment naming its version"),
    ("alice-access", _policy("policy", lambda d: d["Statement"][4].update(Resource="arn:aws:ec2:eu-central-1:123456789012:instance/*")), "S29: Statement[4]: ec2:StartInstances on ['arn:aws:ec2:eu-central-1:123456789012:instance/*']; name alice's one instance by ARN"),
    ("alice-access", _policy("policy", lambda d: d["Statement"][2].update(Action=["ssm:TerminateSession", "ssm:ResumeSession"])), "S29: Statement[2]: ssm:ResumeSession on ['arn:aws:ssm:eu-central-1:123456789012:session/${aws:username}-*']; only the caller's own sessions (session/* with ssm:resourceTag/aws:ssmmessages:session-id = ${aws:userid}; to end one also session/${aws:username}-*)"),
    ("production-operators", _policy("policy", lambda d: d["Statement"][4]["Condition"]["StringEquals"].update({"ssm:resourceTag/devprod:role": "developer"})), "S29: Statement[4]: ssm:SendCommand must require {'ssm:resourceTag/devprod:role': 'production', 'ssm:resourceTag/devprod:stack': 'prod'} (got {'ssm:resourceTag/devprod:role': 'developer'}): production's host, never a developer box"),
    ("alice-box", _option("ignoreChanges", ["ami"]), "R1: a developer box must ignore changes to userData"),
    ("alice-home", _option("retainOnDelete", False), "R2: a home volume must have retainOnDelete"),
    ("alice-home-attachment", _option("deleteBeforeReplace", False), "R2b: a volume attachment must use deleteBeforeReplace"),
    ("production-host", _set("disableApiTermination", False), "R4: the production host must set disableApiTermination"),
]


def test_every_rule_has_a_failing_case():
    covered = {expected.split(":")[0] for _, _, expected in CASES}
    # S30's cases are in tests/test_policy_https.py (the example stacks have no load balancer).
    assert covered | {"S30"} == {rule.id for rule in RULES}


@pytest.mark.parametrize("name, change, expected", CASES, ids=[f"{c[2].split(':')[0]}-{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_compliant_then_one_change_violates(resources, name, change, expected):
    resource = resources[name]
    assert violations(resource.type, resource.inputs, resource.options) == [], resource.urn
    props, options = copy.deepcopy(resource.inputs), copy.deepcopy(resource.options)
    change(props, options)
    found = violations(resource.type, props, options)
    assert expected in found, found


def _crossguard_messages(policy, resource_type, props, options):
    reported = []
    args = ResourceValidationArgs(
        resource_type=resource_type, props=props, urn="urn:test", name="test",
        opts=PolicyResourceOptions(
            protect=options.get("protect", False), ignore_changes=options.get("ignoreChanges", []),
            delete_before_replace=options.get("deleteBeforeReplace"), aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
        ),
        provider=None,
    )
    # The pack keeps its callback private; call it as the analyzer would.
    policy._ResourceValidationPolicy__validate(args, lambda message, urn=None: reported.append(message))
    return reported


@pytest.mark.parametrize("name, change, expected", [c for c in CASES if not c[2].startswith("R2:")])
def test_crossguard_pack_reports_what_the_predicates_report(resources, name, change, expected):
    resource = resources[name]
    props, options = copy.deepcopy(resource.inputs), copy.deepcopy(resource.options)
    change(props, options)
    predicate = [m for m in violations(resource.type, props, {**options, "retainOnDelete": None})]
    pack = [
        m
        for p in policies()
        if isinstance(p, ResourceValidationPolicy)
        for m in _crossguard_messages(p, resource.type, props, options)
    ]
    assert pack == predicate and expected in pack


def test_pack_has_one_mandatory_policy_per_rule():
    from policy.stack_rules import STACK_RULES

    names = [p.name for p in policies()]
    assert len(names) == len(set(names)) == len(RULES) + len(STACK_RULES)
    assert to_policy(RULES[0]).enforcement_level.value == "mandatory"


def test_plan_exits_1_on_a_violation(monkeypatch, stack_project):
    """A document parameter without a pattern (config cannot express it) fails the plan."""
    from typer.testing import CliRunner

    import components.production_service as service
    from devprod.cli import app

    monkeypatch.setattr(service, "RELEASE_PATTERN", "")
    result = CliRunner().invoke(app, ["plan", "prod", "--project-dir", str(stack_project)])
    assert result.exit_code == 1, result.output
    assert "policy violation production-deploy: S18: parameter 'release' has no allowedPattern" in result.stderr
    clean = CliRunner().invoke(app, ["plan", "dev", "--project-dir", str(stack_project)])
    assert clean.exit_code == 0 and "no violations" in clean.stdout
