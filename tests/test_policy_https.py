"""Rules for what issue #15 adds: S30 (HTTPS-only listeners, hardened ALB), S31 (hosts admit only
the load balancer), S22's live-release exception and S29's new operator statements; each both ways."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from devprod.plan import load_stack_raw
from policy.rules import violations
from policy.stack_rules import StackContext, stack_violations
from tests.conftest import STACKS, plan_of

LISTENER = "aws:lb/listener:Listener"
ALB = "aws:lb/loadBalancer:LoadBalancer"


@pytest.fixture(scope="module")
def three():
    raw, _ = load_stack_raw(STACKS, "prod3")
    return plan_of(raw, stack="prod3")


def _inputs(plan, name):
    return copy.deepcopy(plan.named(name).inputs)


def test_s30_the_planned_listeners_and_balancer_pass(three):
    for name, type_ in (("production-lb-https", LISTENER), ("production-lb-http-redirect", LISTENER),
                        ("production-lb-alb", ALB)):
        assert violations(type_, _inputs(three, name), {}) == [], name


@pytest.mark.parametrize("policy", [None, "ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS-1-1-2017-01"])
def test_s30_an_https_listener_needs_a_tls12_policy(three, policy):
    props = {**_inputs(three, "production-lb-https"), "sslPolicy": policy}
    (message,) = violations(LISTENER, props, {})
    assert message.startswith(f"S30: HTTPS listener sslPolicy {policy!r} is not one of")


@pytest.mark.parametrize(
    "actions",
    [
        [{"type": "forward", "targetGroupArn": "arn:aws:elasticloadbalancing:x"}],
        [{"type": "redirect", "redirect": {"protocol": "HTTP", "port": "8080", "statusCode": "HTTP_301"}}],
        [{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_302"}}],
        [],
    ],
    ids=["forward", "to-http", "302", "none"],
)
def test_s30_plain_http_may_only_redirect_to_https(three, actions):
    props = {**_inputs(three, "production-lb-http-redirect"), "defaultActions": actions}
    assert violations(LISTENER, props, {}) == ["S30: an HTTP listener may only redirect to HTTPS (301)"]


def test_s30_other_listener_protocols_are_refused(three):
    props = {**_inputs(three, "production-lb-https"), "protocol": "TCP"}
    assert violations(LISTENER, props, {}) == [
        "S30: listener protocol 'TCP': production serves HTTPS (and HTTP only to redirect)"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dropInvalidHeaderFields": False}, "S30: an application load balancer must set dropInvalidHeaderFields"),
        ({"enableDeletionProtection": None}, "S30: the production load balancer must set enableDeletionProtection"),
    ],
)
def test_s30_the_balancer_drops_invalid_headers_and_is_protected(three, change, message):
    assert violations(ALB, {**_inputs(three, "production-lb-alb"), **change}, {}) == [message]


def _stack(plan):
    return copy.deepcopy(plan.stack_resources())


def _messages(stack):
    return [f.message for f in stack_violations(stack, StackContext())]


def test_s31_the_three_host_stack_is_clean(three):
    assert _messages(_stack(three)) == []


@pytest.mark.parametrize(
    "rule",
    [
        {"protocol": "tcp", "fromPort": 8000, "toPort": 8000, "description": "x", "cidrBlocks": ["10.0.0.0/8"]},
        {"protocol": "tcp", "fromPort": 8000, "toPort": 8000, "description": "x", "securityGroups": ["sg-other"]},
    ],
    ids=["cidr", "other-group"],
)
def test_s31_hosts_behind_a_balancer_admit_nothing_else(three, rule):
    stack = _stack(three)
    stack = [replace(r, props={**r.props, "ingress": [*r.props["ingress"], rule]}) if r.name == "production-sg" else r
             for r in stack]
    (message,) = _messages(stack)
    assert message.startswith("S31: production host group production-sg admits")


def test_s31_does_not_apply_without_a_balancer(prod_plan):
    assert _messages(_stack(prod_plan)) == []


def _with_statement(stack, name, statement):
    out = []
    for r in stack:
        if r.name == name:
            document = json.loads(r.props["policy"])
            document["Statement"].append(statement)
            r = replace(r, props={**r.props, "policy": json.dumps(document)})
        out.append(r)
    return out


def test_s22_the_host_role_may_read_only_its_own_stacks_live_release(three):
    other = {"Effect": "Allow", "Action": "ssm:GetParameter",
             "Resource": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/dev/live-release"}
    (message,) = _messages(_with_statement(_stack(three), "production-access", other))
    assert message.startswith("S22: production role production-role may ssm:GetParameter on")
    below = {**other, "Resource": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod3/live-release/x"}
    assert len(_messages(_with_statement(_stack(three), "production-access", below))) == 1


def _operators(plan):
    resource = plan.named("production-operators")
    return resource.type, copy.deepcopy(resource.inputs)


def test_s29_operators_new_statements_pass(three):
    type_, props = _operators(three)
    assert violations(type_, props, {}) == []


@pytest.mark.parametrize(
    "statement, message",
    [
        ({"Effect": "Allow", "Action": "ssm:PutParameter",
          "Resource": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod3/app/DB_PASSWORD"},
         "only /devprod/prod3/live-release"),
        ({"Effect": "Allow", "Action": "ssm:PutParameter",
          "Resource": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/dev/live-release"},
         "only /devprod/prod3/live-release"),
        ({"Effect": "Allow", "Action": "codepipeline:DisableStageTransition", "Resource": "*"},
         "only this stack's pipeline, by ARN"),
        ({"Effect": "Allow", "Action": "codepipeline:DisableStageTransition",
          "Resource": "arn:aws:codepipeline:eu-central-1:123456789012:*"},
         "only this stack's pipeline, by ARN"),
        ({"Effect": "Allow", "Action": "codepipeline:StartPipelineExecution",
          "Resource": "arn:aws:codepipeline:eu-central-1:123456789012:ExampleDeployPipeline"},
         "'codepipeline:StartPipelineExecution' is not one of"),
        ({"Effect": "Allow", "Action": "elasticloadbalancing:DeregisterTargets", "Resource": "*"},
         "only this stack's one target group, by ARN"),
        ({"Effect": "Allow", "Action": "elasticloadbalancing:RegisterTargets",
          "Resource": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/*"},
         "only this stack's one target group, by ARN"),
        ({"Effect": "Allow", "Action": "elasticloadbalancing:DeregisterTargets",
          "Resource": ["arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0123",
                       "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/u/0456"]},
         "only this stack's one target group, by ARN"),
        ({"Effect": "Allow", "Action": "elasticloadbalancing:DeleteTargetGroup",
          "Resource": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0123"},
         "'elasticloadbalancing:DeleteTargetGroup' is not one of"),
    ],
    ids=["app-secret", "other-stack", "any-pipeline", "every-pipeline", "start-pipeline", "deregister-any",
         "register-every", "two-groups", "delete-group"],
)
def test_s29_operators_get_nothing_beyond_the_live_release_freeze_and_health(three, statement, message):
    type_, props = _operators(three)
    document = json.loads(props["policy"])
    document["Statement"].append(statement)
    props["policy"] = json.dumps(document)
    found = [m for m in violations(type_, props, {}) if m.startswith("S29")]
    assert len(found) == 1 and message in found[0], found
