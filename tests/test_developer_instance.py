"""DeveloperInstance and Network under Pulumi's mocks: S1-S7 and R1-R3 on recorded resources."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components.config import parse_stack_config
from components.developer_instance import ami_parameter, architecture, cron_expression, render_user_data
from components.program import build
from devprod.plan import record

NAMES = ("alice", "bob", "carol")


def only(plan, type_, name):
    found = [r for r in plan.of_type(type_) if r.name == name]
    assert len(found) == 1, f"expected one {type_} named {name}, got {[r.urn for r in found]}"
    return found[0]


@pytest.mark.parametrize("dev", NAMES)
def test_s1_imdsv2_required_with_hop_limit_1(dev_plan, dev):
    box = only(dev_plan, "aws:ec2/instance:Instance", f"{dev}-box")
    meta = box.inputs["metadataOptions"]
    assert meta["httpTokens"] == "required", box.urn
    assert meta["httpPutResponseHopLimit"] == 1, box.urn


@pytest.mark.parametrize("dev", NAMES)
def test_s2_root_and_home_encrypted(dev_plan, dev):
    box = only(dev_plan, "aws:ec2/instance:Instance", f"{dev}-box")
    assert box.inputs["rootBlockDevice"]["encrypted"] is True, box.urn
    home = only(dev_plan, "aws:ebs/volume:Volume", f"{dev}-home")
    assert home.inputs["encrypted"] is True and home.inputs["type"] == "gp3", home.urn


def _ingress_sources(group):
    for rule in group.inputs.get("ingress", []):
        for cidr in rule.get("cidrBlocks", []) + rule.get("ipv6CidrBlocks", []):
            yield rule, ipaddress.ip_network(cidr)


def test_s3_s5_ssm_boxes_have_no_ingress_and_ssh_box_only_its_cidrs(dev_plan):
    for dev in ("alice", "bob"):
        group = only(dev_plan, "aws:ec2/securityGroup:SecurityGroup", f"{dev}-sg")
        assert group.inputs.get("ingress", []) == [], group.urn
    carol = only(dev_plan, "aws:ec2/securityGroup:SecurityGroup", "carol-sg")
    rules = list(_ingress_sources(carol))
    assert [str(net) for _, net in rules] == ["203.0.113.0/24"], carol.urn
    for rule, net in rules:
        assert net.prefixlen > 0 and rule["description"], carol.urn
        assert (rule["fromPort"], rule["toPort"]) == (22, 22)
    for group in dev_plan.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for rule in group.inputs.get("egress", []) + group.inputs.get("ingress", []):
            assert rule.get("description"), f"{group.urn}: rule without description"


def test_s5_no_key_pair_anywhere(dev_plan):
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        assert "keyName" not in box.inputs, box.urn
    assert not dev_plan.of_type("aws:ec2/keyPair:KeyPair")


def test_s6_ami_comes_from_the_public_ssm_parameter():
    from components.config import OperatingSystem

    assert ami_parameter(OperatingSystem.AL2023, "t3.large").startswith("/aws/service/ami-amazon-linux-latest/al2023")
    assert "/arm64/" in ami_parameter(OperatingSystem.UBUNTU_2404, "m7g.large")
    assert architecture("g5.xlarge") == "x86_64" and architecture("c7gn.large") == "arm64"


def test_s7_user_data_is_small_has_no_secrets_and_quotes_the_key(dev_plan):
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        text = box.inputs["userData"]
        assert len(text.encode()) < 16 * 1024, box.urn
        assert "PRIVATE KEY" not in text and "AWS_SECRET" not in text, box.urn
        assert text.startswith("#!/bin/bash\n"), box.urn
        name = box.name.removesuffix("-box")
        assert f"DEV_USER={name}\n" in text


def test_r1_ami_and_user_data_changes_never_replace_a_box(dev_plan):
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        assert {"ami", "userData"} <= set(box.options["ignoreChanges"]), box.urn
        assert box.inputs.get("userDataReplaceOnChange") is False, box.urn


@pytest.mark.parametrize("dev", NAMES)
def test_r2_home_volume_retained_in_a_pinned_zone_attachment_delete_before_replace(dev_plan, dev, dev_raw):
    home = only(dev_plan, "aws:ebs/volume:Volume", f"{dev}-home")
    assert home.options["retainOnDelete"] is True, home.urn
    expected_zone = "eu-central-1b" if dev == "carol" else "eu-central-1a"
    assert home.inputs["availabilityZone"] == expected_zone, home.urn
    attach = only(dev_plan, "aws:ec2/volumeAttachment:VolumeAttachment", f"{dev}-home-attachment")
    assert attach.options["deleteBeforeReplace"] is True, attach.urn
    assert attach.inputs["volumeId"] == f"vol-computed-{dev}-home"
    assert attach.inputs["instanceId"] == f"i-computed-{dev}-box"


def test_r2_protect_home_when_config_asks(dev_raw):
    dev_raw["devprod:developers"][0]["protectHome"] = True
    plan = _plan(dev_raw)
    assert plan.named("alice-home").options["protect"] is True
    assert plan.named("bob-home").options["protect"] is False


def test_r3_replacement_inputs_are_constants_or_pinned(dev_plan):
    subnets = {r.name: r for r in dev_plan.of_type("aws:ec2/subnet:Subnet")}
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        assert box.inputs["associatePublicIpAddress"] is True, box.urn
        assert box.inputs["subnetId"].startswith("network-subnet-eu-central-1"), box.urn
    assert subnets["network-subnet-eu-central-1a"].inputs["availabilityZone"] == "eu-central-1a"
    assert subnets["network-subnet-eu-central-1a"].inputs["cidrBlock"] == "10.40.0.0/20"
    assert subnets["network-subnet-eu-central-1b"].inputs["cidrBlock"] == "10.40.16.0/20"


def test_children_are_parented_and_named_after_the_developer(dev_plan):
    for dev in NAMES:
        component = only(dev_plan, "devprod:compute:DeveloperInstance", dev)
        children = dev_plan.children_of(component.urn)
        assert children, component.urn
        for child in children:
            assert child.name.startswith(f"{dev}-"), child.urn
            tags = child.inputs.get("tags")
            if tags is not None:
                assert tags["Name"] == child.name and tags["devprod:developer"] == dev, child.urn


def test_one_box_per_developer_and_outputs(dev_plan):
    assert sorted(b.name for b in dev_plan.of_type("aws:ec2/instance:Instance")) == [f"{n}-box" for n in NAMES]
    outputs = dev_plan.outputs["developers"]
    assert sorted(outputs) == list(NAMES)
    alice = outputs["alice"]["sshConfig"]
    assert "Host alice-dev\n  HostName i-computed-alice-box\n  User alice\n" in alice
    assert "--document-name AWS-StartSSHSession" in alice
    carol = outputs["carol"]["sshConfig"]
    assert "HostName computed-eip-carol-eip" in carol and "ProxyCommand" not in carol
    assert outputs["bob"]["vscode"] == "code --remote ssh-remote+bob-dev /home/bob"


def test_stop_schedule_and_its_narrow_role(dev_plan):
    stop = only(dev_plan, "aws:scheduler/schedule:Schedule", "alice-stop")
    assert stop.inputs["scheduleExpression"] == "cron(0 20 ? * MON,TUE,WED,THU,FRI *)"
    assert stop.inputs["scheduleExpressionTimezone"] == "Europe/Berlin"
    assert stop.inputs["target"]["arn"] == "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
    assert json.loads(stop.inputs["target"]["input"]) == {"InstanceIds": ["i-computed-alice-box"]}
    policy = json.loads(only(dev_plan, "aws:iam/rolePolicy:RolePolicy", "alice-scheduler-policy").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Action"] == ["ec2:StopInstances"]
    assert statement["Resource"] == "arn:aws:ec2:eu-central-1:123456789012:instance/i-computed-alice-box"
    trust = json.loads(only(dev_plan, "aws:iam/role:Role", "alice-scheduler-role").inputs["assumeRolePolicy"])
    (trust_statement,) = trust["Statement"]
    assert trust_statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust_statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    assert not [s for s in dev_plan.of_type("aws:scheduler/schedule:Schedule") if s.name.startswith("bob-")]


def test_idle_alarm_stops_the_box(dev_plan):
    alarm = only(dev_plan, "aws:cloudwatch/metricAlarm:MetricAlarm", "alice-idle-stop")
    assert alarm.inputs["alarmActions"] == ["arn:aws:automate:eu-central-1:ec2:stop"]
    assert alarm.inputs["evaluationPeriods"] == 12 and alarm.inputs["period"] == 300
    assert alarm.inputs["dimensions"] == {"InstanceId": "i-computed-alice-box"}
    assert not [a for a in dev_plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.name.startswith("bob-")]


def test_morning_start_adds_a_start_schedule(dev_raw):
    dev_raw["devprod:devDefaults"]["schedule"]["startAt"] = "07:30"
    plan = _plan(dev_raw)
    start = plan.named("alice-start")
    assert start.inputs["scheduleExpression"] == "cron(30 7 ? * MON,TUE,WED,THU,FRI *)"
    policy = json.loads(plan.named("alice-scheduler-policy").inputs["policy"])
    assert policy["Statement"][0]["Action"] == ["ec2:StopInstances", "ec2:StartInstances"]


def test_existing_vpc_registers_no_network_resources(dev_raw):
    dev_raw["devprod:network"] = {
        "vpcId": "vpc-0123abcd",
        "subnets": {"eu-central-1a": "subnet-0aaa1111", "eu-central-1b": "subnet-0bbb2222"},
    }
    plan = _plan(dev_raw)
    assert not plan.of_type("aws:ec2/vpc:Vpc")
    assert plan.named("carol-box").inputs["subnetId"] == "subnet-0bbb2222"
    assert plan.named("carol-sg").inputs["vpcId"] == "vpc-0123abcd"


def test_network_has_no_nat_and_a_closed_default_group(dev_plan):
    assert not dev_plan.of_type("aws:ec2/natGateway:NatGateway")
    default = only(dev_plan, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "network-default-sg")
    assert default.inputs.get("ingress", []) == [] and default.inputs.get("egress", []) == []


def test_cron_and_user_data_helpers(dev_raw):
    assert cron_expression("06:05", ("sat", "sun")) == "cron(5 6 ? * SAT,SUN *)"
    dev = parse_stack_config(dev_raw, project="devprod", stack="dev").developers[0]
    text = render_user_data(dev, "vol-0123")
    assert "HOME_VOLUME_ID=vol-0123\n" in text and "SSH_PUBLIC_KEY='ssh-ed25519 " in text


def _plan(raw):
    config = parse_stack_config(raw, project="devprod", stack="dev")
    return record(lambda: build(config), project="devprod", stack="dev")


def test_s25_flow_logs_reject_by_default_with_retention_and_a_scoped_role(dev_plan, dev_raw):
    from tests.conftest import plan_of

    flow = only(dev_plan, "aws:ec2/flowLog:FlowLog", "network-flow-log")
    group = only(dev_plan, "aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    assert flow.inputs["trafficType"] == "REJECT", flow.urn
    assert flow.inputs["vpcId"] == only(dev_plan, "aws:ec2/vpc:Vpc", "network-vpc").computed["id"]
    assert flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert flow.inputs["logDestination"] == group.computed["arn"]
    assert group.inputs["retentionInDays"] == 30 and group.inputs["name"] == "/devprod/dev/vpc-flow-logs/network"
    trust = json.loads(only(dev_plan, "aws:iam/role:Role", "network-flow-logs-role").inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    dev_raw["devprod:network"]["flowLogs"] = {"traffic": "ALL", "retentionDays": 90}
    changed = plan_of(dev_raw, stack="dev")
    assert only(changed, "aws:ec2/flowLog:FlowLog", "network-flow-log").inputs["trafficType"] == "ALL"
    assert only(changed, "aws:cloudwatch/logGroup:LogGroup", "network-flow-logs").inputs["retentionInDays"] == 90


def test_s21_box_roles_hold_no_parameter_or_kms_access(dev_plan):
    for policy in dev_plan.of_type("aws:iam/rolePolicy:RolePolicy"):
        text = policy.inputs["policy"]
        assert "ssm:GetParameter" not in text and "kms:" not in text, policy.urn
