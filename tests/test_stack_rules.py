"""Stack rules S20-S22, S24, S25, S27: clean as planned, each broken once with an exact message;
the CrossGuard stack policies report what the predicates report; `devprod plan` exits 1 on them."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
from pulumi_policy import StackValidationArgs

from policy.crossguard import policies
from policy.stack_rules import STACK_RULES, StackContext, StackResource, stack_violations

SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
CW_AGENT = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"


@pytest.fixture
def stack(dev_plan, prod_plan):
    """Both example stacks as one list (names are distinct), deep-copied so a test may change them."""
    return copy.deepcopy(dev_plan.stack_resources() + prod_plan.stack_resources())


def named(stack, name) -> StackResource:
    (found,) = [r for r in stack if r.name == name]
    return found


def ref(resource: StackResource) -> str:
    """The value a policy or attachment holds to point at `resource` (its mock id)."""
    return next(r for r in sorted(resource.refs) if r.endswith("-computed-id") or r.startswith("vpc-"))


def messages(stack, context=StackContext()) -> list[str]:
    return [f.message for f in stack_violations(stack, context)]


def add(stack, type_, name, **props) -> list[StackResource]:
    return stack + [StackResource(urn=f"urn:test::{name}", type=type_, name=name, props=props)]


def change_policy(stack, name, edit) -> list[StackResource]:
    resource = named(stack, name)
    document = json.loads(resource.props["policy"])
    edit(document)
    changed = replace(resource, props={**resource.props, "policy": json.dumps(document)})
    return [changed if r is resource else r for r in stack]


def drop(stack, name) -> list[StackResource]:
    return [r for r in stack if r.name != name]


def test_the_example_stacks_are_clean(stack):
    assert messages(stack) == []


def test_s20_a_managed_policy_on_an_instance_role_fails_unless_allowed(stack):
    role = named(stack, "production-role")
    broken = add(stack, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "x", role=role.props.get("name") or sorted(role.refs)[0], policyArn=SSM_CORE)
    assert messages(broken) == [
        f"S20: instance role production-role has the managed policy {SSM_CORE} attached; instance roles get "
        "only devprod's own policies (allow one by ARN in devprod:instanceRoleManagedPolicies)"
    ]
    inline = [replace(r, props={**r.props, "managedPolicyArns": [CW_AGENT]}) if r.name == "alice-role" else r for r in stack]
    assert [m.split(";")[0] for m in messages(inline)] == [f"S20: instance role alice-role has the managed policy {CW_AGENT} attached"]
    assert messages(inline, StackContext(allowed_managed_policies=frozenset({CW_AGENT}))) == []


@pytest.mark.parametrize(
    "statement, granted",
    [
        ({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}, "ssm:GetParameter"),
        ({"Effect": "Allow", "Action": ["ssm:Get*"], "Resource": "*"}, "ssm:GetParameter, ssm:GetParameterHistory, ssm:GetParameters, ssm:GetParametersByPath"),
        ({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}, "kms:Decrypt"),
        ({"Effect": "Allow", "Action": "KMS:*", "Resource": "*"}, "kms:Decrypt"),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "kms:Decrypt, ssm:GetParameter, ssm:GetParameterHistory, ssm:GetParameters, ssm:GetParametersByPath"),
    ],
)
def test_s21_a_developer_role_may_read_no_parameter_and_decrypt_nothing(stack, statement, granted):
    broken = change_policy(stack, "bob-ssm-agent", lambda d: d["Statement"].append(statement))
    assert messages(broken) == [
        f"S21: developer role bob-role is allowed {granted}; a box may read no parameter and decrypt nothing"
    ]


def test_s21_a_deny_is_not_a_grant(stack):
    deny = {"Effect": "Deny", "Action": "ssm:GetParameter", "Resource": "*"}
    assert messages(change_policy(stack, "bob-ssm-agent", lambda d: d["Statement"].append(deny))) == []


@pytest.mark.parametrize(
    "resource",
    [
        "*",
        "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/dev/app/*",
        "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app*",
        "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/*",
    ],
)
def test_s22_production_reads_only_its_own_path(stack, resource):
    def widen(document):
        for statement in document["Statement"]:
            if statement["Sid"] == "ReadOwnParameters":
                statement["Resource"] = [resource]

    found = messages(change_policy(stack, "production-access", widen))
    assert found == [
        "S22: production role production-role may ssm:GetParameter, ssm:GetParameters, ssm:GetParametersByPath "
        f"on [{resource!r}]; only parameters "
        "under /devprod/prod/app/"
    ]


def test_s22_production_decrypts_only_with_a_named_key(stack):
    def any_key(document):
        for statement in document["Statement"]:
            if statement["Sid"] == "DecryptOwnParameters":
                statement["Resource"] = "*"

    assert messages(change_policy(stack, "production-access", any_key)) == [
        "S22: production role production-role may kms:Decrypt with any key; name the app parameters key"
    ]


def test_s22_only_the_production_role_decrypts_through_ssm(stack):
    root = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}
    assert messages(change_policy(stack, "production-parameters-key", lambda d: d["Statement"].append(root))) == [
        "S22: key policy lets {'AWS': 'arn:aws:iam::123456789012:root'} decrypt the app's parameters; only the production role may",
        "S22: the production role's decrypt grant must require kms:ViaService ssm.REGION.amazonaws.com",
    ]

    def no_via(document):
        document["Statement"][-1]["Condition"]["StringEquals"].pop("kms:ViaService")

    assert messages(change_policy(stack, "production-parameters-key", no_via)) == [
        "S22: the production role's decrypt grant must require kms:ViaService ssm.REGION.amazonaws.com"
    ]
    assert messages(drop(stack, "production-parameters-key")) == [
        "S22: no customer-managed key (tag devprod:purpose=app-parameters) for the app's parameters"
    ]


def test_s24_alerts_topic_needs_a_key_eventbridge_may_use(stack):
    topic = named(stack, "delivery-alerts")
    aws_managed = [replace(r, props={**r.props, "kmsMasterKeyId": "alias/aws/sns"}) if r is topic else r for r in stack]
    assert messages(aws_managed) == [
        "S24: kmsMasterKeyId 'alias/aws/sns' is AWS-managed; EventBridge cannot publish to it"
    ]
    plain = [replace(r, props={k: v for k, v in r.props.items() if k != "kmsMasterKeyId"}) if r is topic else r for r in stack]
    assert messages(plain) == ["S24: a topic EventBridge publishes to must be encrypted with a customer-managed key"]

    def no_events(document):
        document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != "EventBridgePublishesAlerts"]

    assert messages(change_policy(stack, "delivery-alerts-key", no_events)) == [
        "S24: key of topic delivery-alerts must let events.amazonaws.com use kms:GenerateDataKey* and kms:Decrypt"
    ]


def test_s24_key_policy_names_events_and_the_topic_uses_that_key(prod_plan):
    key = prod_plan.named("delivery-alerts-key")
    topic = prod_plan.named("delivery-alerts")
    assert topic.inputs["kmsMasterKeyId"] == f"arn:aws:kms:eu-central-1:123456789012:key/{key.computed['keyId']}"
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    events = statements["EventBridgePublishesAlerts"]
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Action"] == ["kms:GenerateDataKey*", "kms:Decrypt"]
    assert key.inputs["enableKeyRotation"] is True


@pytest.mark.parametrize("vpc", ["network-vpc"])
def test_s25_every_vpc_has_flow_logs(stack, vpc):
    without = drop(stack, "network-flow-log")
    assert messages(without) == [
        "S25: every VPC devprod creates needs VPC flow logs (aws.ec2.FlowLog with its vpcId)"
    ] * 2  # the dev and the prod VPC share a logical name


def test_s26_repository_code_may_not_write_releases(stack):
    for resource in ("arn:aws:s3:::artifacts-bucket-computed/*", "arn:aws:s3:::artifacts-bucket-computed/releases/*", "*"):
        broken = change_policy(
            stack, "delivery-build-role-policy",
            lambda d: d["Statement"].append({"Effect": "Allow", "Action": "s3:Put*", "Resource": resource}),
        )
        assert messages(broken) == [
            "S26: role delivery-build-role of delivery-build (runs repository code) may s3:PutObject under releases/; "
            "only the Release action publishes"
        ], resource


PREVIEW = "repo:example-org/infra:pull_request"


@pytest.mark.parametrize(
    "statement, granted",
    [
        ({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/x"}, "s3:PutObject"),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/x"}, "s3:*"),
        ({"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "*"}, "kms:Encrypt"),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "everything but iam:*"),
    ],
)
def test_s27_a_pull_request_identity_only_reads(stack, statement, granted):
    broken = change_policy(stack, "ci-preview-policy", lambda d: d["Statement"].append(statement))
    assert messages(broken) == [
        f"S27: role ci-preview-role may {granted} but trusts pull requests ({PREVIEW}); a pull-request identity only reads"
    ]


def test_s27_reads_and_denies_are_not_writes(stack):
    reads = [
        {"Effect": "Allow", "Action": ["s3:Get*", "ec2:DescribeInstances", "logs:ListTagsForResource"], "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "Resource": "*"},
    ]
    assert messages(change_policy(stack, "ci-preview-policy", lambda d: d["Statement"].extend(reads))) == []


def test_s27_no_managed_policy_on_a_pull_request_identity(stack):
    role = named(stack, "ci-preview-role")
    arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    broken = add(stack, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "x", role=ref(role), policyArn=arn)
    assert messages(broken) == [
        f"S27: role ci-preview-role has the managed policy {arn} but trusts pull requests ({PREVIEW}); "
        "a pull-request identity only reads"
    ]


def test_s27_an_identity_that_writes_trusts_an_environment_not_a_branch(stack):
    role = named(stack, "delivery-github-role")
    branch = "repo:example-org/app:ref:refs/heads/main"
    trust = role.props["assumeRolePolicy"].replace("repo:example-org/app:environment:production", branch)
    broken = [replace(r, props={**r.props, "assumeRolePolicy": trust}) if r is role else r for r in stack]
    assert messages(broken) == [
        "S27: role delivery-github-role may s3:PutObject, codepipeline:StartPipelineExecution but trusts a branch "
        f"({branch}); an identity that writes trusts one GitHub environment"
    ]


def test_s26_the_release_publisher_is_never_a_build_role(stack):
    build_role = named(stack, "delivery-build-role").refs
    arn = next(r for r in build_role if r.startswith("arn:"))

    def swap(document):
        document["Statement"][2]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] = arn

    assert messages(change_policy(stack, "artifacts-tls-only", swap)) == [
        "S26: role delivery-build-role of delivery-build (runs repository code) is the bucket's release publisher"
    ]


def test_every_stack_rule_has_a_failing_case():
    # S31's cases are in tests/test_policy_https.py (the example stacks have no load balancer).
    covered = {"S20", "S21", "S22", "S24", "S25", "S26", "S27", "S31"}
    assert {rule.id for rule in STACK_RULES} == covered


def _pack_messages(stack, config=None):
    from pulumi_policy.policy import PolicyResource

    def outputs(r):
        """What CrossGuard sees after `pulumi up`: the inputs plus the computed id, name and ARN."""
        computed = {}
        for value in sorted(r.refs):
            key = "arn" if value.startswith("arn:") else "id" if value.endswith("-computed-id") else "name"
            computed.setdefault(key, value)
        return {**computed, **r.props}

    resources = [
        PolicyResource(resource_type=r.type, props=outputs(r), urn=r.urn, name=r.name, opts=None, provider=None,
                       parent=None, dependencies=[], property_dependencies={})
        for r in stack
    ]
    found = []
    for policy in policies():
        validate = getattr(policy, "_StackValidationPolicy__validate", None)
        if validate is not None:
            validate(StackValidationArgs(resources, config or {}), lambda message, urn=None: found.append(message))
    return found


def test_crossguard_stack_policies_report_what_the_predicates_report(stack):
    role = named(stack, "production-role")
    broken = add(stack, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "x", role=sorted(role.refs)[0], policyArn=SSM_CORE)
    broken = drop(broken, "network-flow-log")
    assert _pack_messages(stack) == []
    predicate = messages(broken)
    assert len(predicate) == 3 and _pack_messages(broken) == predicate
    allowed = _pack_messages(broken, {"allowedManagedPolicies": [SSM_CORE]})
    assert [m[:4] for m in allowed] == ["S25:", "S25:"]


def test_plan_exits_1_naming_the_role_and_the_managed_policy(monkeypatch, stack_project):
    """A managed policy that reaches an instance role (the config cannot ask for this one) fails the plan."""
    from typer.testing import CliRunner

    import components.common as common
    from devprod.cli import app

    original = common.InstanceRoleSpec

    def with_core(**kwargs):
        return original(**{**kwargs, "managed_policies": (SSM_CORE,)})

    monkeypatch.setattr("components.developer_instance.InstanceRoleSpec", with_core)
    result = CliRunner().invoke(app, ["plan", "dev", "--project-dir", str(stack_project)])
    assert result.exit_code == 1, result.output
    assert (
        "policy violation alice-attach-AmazonSSMManagedInstanceCore: S20: instance role alice-role has the managed "
        f"policy {SSM_CORE} attached" in result.stderr.replace("\n", " ")
    ), result.stderr
