"""DeveloperInstance and Network under Pulumi's mocks: S1-S7 and R1-R3 on recorded resources."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components.config import parse_stack_config
from components.developer_instance import ami_parameter, architecture, cron_expression, render_user_data
from components.program import build
from devprod.plan import record
from tests.conftest import ROOT

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
    # ssh runs devprod's start-on-connect helper, which starts a stopped box before the session.
    assert "  ProxyCommand devprod box connect alice --instance-id %h --port %p --region eu-central-1\n" in alice
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


def test_idle_stop_is_the_box_powering_itself_off_not_a_cpu_alarm(dev_plan):
    assert not dev_plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"), "no CPU-only alarm stops a box"
    for dev in NAMES:
        box = only(dev_plan, "aws:ec2/instance:Instance", f"{dev}-box")
        assert box.inputs["instanceInitiatedShutdownBehavior"] == "stop", box.urn
    alice = only(dev_plan, "aws:ssm/association:Association", "alice-box-setup")
    assert alice.inputs["targets"] == [{"key": "InstanceIds", "values": ["i-computed-alice-box"]}], alice.urn
    assert alice.inputs["parameters"]["idleMinutes"] == "60" and alice.inputs["parameters"]["cpuPercent"] == "5"
    assert alice.inputs["scheduleExpression"] == "rate(30 minutes)"
    document = only(dev_plan, "aws:ssm/document:Document", "box-setup")
    assert alice.inputs["name"] == document.computed["name"], "the association runs the stack's box-setup document"
    bob = only(dev_plan, "aws:ssm/association:Association", "bob-box-setup")
    assert bob.inputs["parameters"]["idleMinutes"] == "0", "always-on opts out of the idle stop"


def test_one_box_setup_document_serves_every_box(dev_raw):
    """SSM refuses a 501st document in an account and region: one per box would stop `pulumi up`
    at a few hundred developers. However many developers, the stack has one, outside every
    box's component, and each box's association runs it with that box's own parameters."""
    from tests.conftest import plan_of

    first = dev_raw["devprod:developers"][0]
    dev_raw["devprod:developers"] = [{**first, "name": f"dev{i:02d}"} for i in range(40)]
    plan = plan_of(dev_raw, stack="dev")
    (document,) = plan.of_type("aws:ssm/document:Document")
    assert document.name == "box-setup" and "DeveloperInstance" not in document.parent, document.urn
    associations = plan.of_type("aws:ssm/association:Association")
    assert len(associations) == 40 and {a.inputs["name"] for a in associations} == {document.computed["name"]}
    assert sorted(a.inputs["parameters"]["user"] for a in associations) == [f"dev{i:02d}" for i in range(40)]
    assert document.inputs["tags"]["devprod:role"] == "developer"


def test_box_document_carries_the_scripts_byte_for_byte_and_passes_s18(dev_plan):
    from components.developer_instance import (AUTHORIZED_KEYS_SCRIPT, BOX_SETUP_SCRIPT, IDLE_STOP_SCRIPT,
                                               KEEPAWAKE_SCRIPT, TOOLS_SCRIPT)
    from policy.rules import violations

    document = only(dev_plan, "aws:ssm/document:Document", "box-setup")
    assert violations(document.type, document.inputs, {}) == [], document.urn
    content = json.loads(document.inputs["content"])
    text = "\n".join(line for step in content["mainSteps"] for line in step["inputs"]["runCommand"])
    for script in (IDLE_STOP_SCRIPT, KEEPAWAKE_SCRIPT, BOX_SETUP_SCRIPT, AUTHORIZED_KEYS_SCRIPT, TOOLS_SCRIPT):
        assert script.read_text().rstrip("\n") in text, script.name
    assert len(document.inputs["content"].encode()) < 64 * 1024  # SSM's limit for a Command document
    parameters = only(dev_plan, "aws:ssm/association:Association", "alice-box-setup").inputs["parameters"]
    assert set(parameters) == set(content["parameters"]), "every parameter the association passes is declared"


def test_box_document_runs_the_keys_step_for_real(dev_plan, tmp_path):
    """The step's shell text, as the SSM agent would run it (sh), installs the key into a fake home."""
    import os
    import subprocess

    content = json.loads(only(dev_plan, "aws:ssm/document:Document", "box-setup").inputs["content"])
    keys = next(s for s in content["mainSteps"] if s["name"] == "authorizedKeys")
    script = tmp_path / "step.sh"
    script.write_text("\n".join(keys["inputs"]["runCommand"]) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".devprod-home").touch()
    os.chown(home, 2345, 2345)
    parameters = only(dev_plan, "aws:ssm/association:Association", "alice-box-setup").inputs["parameters"]
    env = {"PATH": os.environ["PATH"], "SSM_user": "alice", "SSM_publicKey": parameters["publicKey"],
           "DEVPROD_HOME": str(home), "DEVPROD_UID": "2345", "DEVPROD_GID": "2345",
           "DEVPROD_STATE_DIR": str(tmp_path / "state"), "DEVPROD_USER_DATA": str(tmp_path / "none")}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert parameters["publicKey"] in (home / ".ssh" / "authorized_keys").read_text()


def test_box_document_installs_the_idle_stop_for_real(dev_plan, tmp_path):
    """The idleStop step as sh runs it, into a DESTDIR: scripts, settings and units land; units verify."""
    import os
    import shutil
    import subprocess

    from tests.test_shell import shellcheck

    content = json.loads(only(dev_plan, "aws:ssm/document:Document", "box-setup").inputs["content"])
    step = next(s for s in content["mainSteps"] if s["name"] == "idleStop")
    script = tmp_path / "step.sh"
    script.write_text("\n".join(step["inputs"]["runCommand"]) + "\n")
    lint = subprocess.run([shellcheck(), "-s", "sh", "-S", "warning", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    parameters = only(dev_plan, "aws:ssm/association:Association", "alice-box-setup").inputs["parameters"]
    root = tmp_path / "root"
    env = {"PATH": os.environ["PATH"], "DESTDIR": str(root),
           **{f"SSM_{k}": v for k, v in parameters.items()}}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    conf = (root / "etc/devprod/idle-stop.conf").read_text()
    assert "IDLE_MINUTES=60\n" in conf and "CPU_PERCENT=5\n" in conf and "WARN_MINUTES=10\n" in conf
    assert os.access(root / "usr/local/bin/devprod-keepawake", os.X_OK)
    assert (root / "usr/local/lib/devprod/devprod-idle-stop.py").read_bytes() == (
        ROOT / "scripts/host/devprod-idle-stop.py").read_bytes()
    assert "d /run/devprod/keepawake 1733 root root -" in (root / "etc/tmpfiles.d/devprod.conf").read_text()
    # `make test` installs systemd-analyze (Makefile SYSTEM_TOOLS).
    units = [str(root / "etc/systemd/system" / u) for u in ("devprod-idle-stop.service", "devprod-idle-stop.timer")]
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    assert check.returncode == 0 and check.stderr == "", check.stderr


def _one_document_per_box(plan: dict) -> dict:
    """`plan` as the program before the shared document recorded it: each box's own
    document `NAME-box-setup` under its component, each association running that one."""
    import copy

    plan = copy.deepcopy(plan)
    resources = [r for r in plan["resources"] if r["name"] != "box-setup"]
    shared = next(r for r in plan["resources"] if r["name"] == "box-setup")
    for association in [r for r in resources if r["type"] == "aws:ssm/association:Association"]:
        own = association["name"]  # NAME-box-setup, as the document was named
        association["inputs"]["name"] = f"{own}-computed"
        resources.append({**shared, "name": own, "parent": association["parent"],
                          "urn": association["urn"].replace("aws:ssm/association:Association", "aws:ssm/document:Document")})
        policy = next(r for r in resources if r["name"] == own.replace("-box-setup", "-state-manager"))
        policy["inputs"]["policy"] = policy["inputs"]["policy"].replace("document/box-setup-computed",
                                                                        f"document/{own}-computed")
    return {**plan, "resources": resources}


def test_moving_to_the_shared_document_changes_no_box_volume_or_bucket(dev_raw):
    """A stack deployed with one document per box: the next plan removes those documents and
    replaces the associations (the provider cannot point one at another document), and nothing
    that holds data changes, so `--fail-on-replace` passes."""
    from devprod.diff import DATA_BEARING, compare
    from tests.conftest import plan_of

    head = plan_of(dev_raw, stack="dev").to_json()
    changes = compare(_one_document_per_box(head), head).changes
    kinds = {(c.type.split(":")[-1], c.kind) for c in changes}
    assert kinds == {("Document", "remove"), ("Document", "add"), ("Association", "replace"),
                     ("RolePolicy", "update")}, kinds
    assert [c.name for c in changes if c.kind == "add"] == ["box-setup"]
    assert sorted(c.name for c in changes if c.kind == "replace") == [f"{d}-box-setup" for d in NAMES]
    assert not [c for c in changes if c.type in DATA_BEARING or c.data_loss], changes


def test_no_box_setup_document_without_developers(prod_plan, dev_raw):
    from tests.conftest import plan_of

    assert not prod_plan.of_type("aws:ssm/association:Association")
    assert "box-setup" not in {r.name for r in prod_plan.resources}
    dev_raw["devprod:developers"] = []
    assert "box-setup" not in {r.name for r in plan_of(dev_raw, stack="dev").resources}


def test_key_rotation_updates_the_association_in_place_and_never_the_box(dev_raw):
    from devprod.diff import compare
    from tests.conftest import plan_of

    base = plan_of(dev_raw, stack="dev").to_json()
    new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMF6oIOB13KcUJRUajc0dZQKQN+1SvR1BVAl/kIXA6vP alice@new-laptop"
    dev_raw["devprod:developers"][0]["sshPublicKey"] = new_key
    head = plan_of(dev_raw, stack="dev").to_json()
    diff = compare(base, head)
    assert [(c.name, c.kind, c.properties) for c in diff.changes] == [("alice-box-setup", "update", ["parameters.publicKey"])]
    association = next(r for r in head["resources"] if r["name"] == "alice-box-setup" and r["type"].endswith("Association"))
    assert association["inputs"]["parameters"]["publicKey"] == new_key
    box = next(r for r in head["resources"] if r["name"] == "alice-box")
    assert "userData" in box["options"]["ignoreChanges"], "the old first-boot script stays; the association carries the key"


def test_box_role_reads_only_the_box_setup_document_and_its_own_association(dev_plan):
    from policy.iam import wildcard_problems

    policy = only(dev_plan, "aws:iam/rolePolicy:RolePolicy", "alice-state-manager")
    document = json.loads(policy.inputs["policy"])
    assert wildcard_problems(document) == [], policy.urn
    resources = {r for s in document["Statement"] for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])}
    assert "arn:aws:ec2:eu-central-1:123456789012:instance/i-computed-alice-box" in resources
    assert "arn:aws:ssm:eu-central-1:123456789012:association/alice-box-setup-computed" in resources
    assert only(dev_plan, "aws:ssm/document:Document", "box-setup").computed["arn"] in resources
    assert not [r for r in resources if ":document/" in r and not r.endswith("/box-setup-computed")], resources
    assert not [r for r in resources if "bob" in r or r.endswith("/*") or r.endswith("/None")], resources


# ------------------------------------------------------------------ S29: access to your own box only


def _matches(pattern: str, value: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern.replace("?", "[?]"))


def allowed(document: dict, action: str, resource: str, context: dict) -> bool:
    """IAM's evaluation for identity-policy Allows, enough for these policies: action and resource
    wildcards, policy variables, StringEquals, BoolIfExists; anything not allowed is denied."""
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] != "Allow" or not any(_matches(a, action) for a in actions):
            continue
        resources = [r.replace("${aws:username}", context["aws:username"]).replace("${aws:userid}", context["aws:userid"]) for r in resources]
        if not any(_matches(r, resource) for r in resources):
            continue
        ok = True
        for operator, block in (statement.get("Condition") or {}).items():
            for key, want in block.items():
                have = context.get(key)
                if operator == "StringEquals":
                    ok &= have == want
                elif operator == "StringLike":
                    want = want.replace("${aws:userid}", context["aws:userid"])
                    ok &= have is not None and _matches(want, have)
                elif operator == "BoolIfExists":
                    ok &= have is None or str(have).lower() == want
                else:
                    ok = False
        if ok:
            return True
    return False


ALICE_CALLER = {"aws:username": "alice", "aws:userid": "AIDAALICE"}


def _box(instance_id: str, developer: str | None, role: str = "developer") -> tuple[str, dict]:
    tags = {"devprod:role": role} | ({"devprod:developer": developer} if developer else {})
    arn = f"arn:aws:ec2:eu-central-1:123456789012:instance/{instance_id}"
    context = {**ALICE_CALLER, **{f"aws:ResourceTag/{k}": v for k, v in tags.items()},
               **{f"ssm:resourceTag/{k}": v for k, v in tags.items()}}
    return arn, context


@pytest.fixture(scope="module")
def alice_access(dev_plan) -> dict:
    return json.loads(only(dev_plan, "aws:iam/policy:Policy", "alice-access").inputs["policy"])


def test_s29_alice_may_use_her_box(alice_access):
    arn, context = _box("i-computed-alice-box", "alice")
    for action in ("ssm:StartSession", "ec2:StartInstances", "ec2:StopInstances"):
        assert allowed(alice_access, action, arn, context), action
    for document in ("arn:aws:ssm:eu-central-1::document/AWS-StartSSHSession",
                     "arn:aws:ssm:eu-central-1:123456789012:document/SSM-SessionManagerRunShell"):
        assert allowed(alice_access, "ssm:StartSession", document, context), document
    own = "arn:aws:ssm:eu-central-1:123456789012:session/alice-0a1b2c3d4e5f"
    assert allowed(alice_access, "ssm:TerminateSession", own, context)
    # A name prefix also matches ann-marie's sessions for ann: resuming (taking over
    # the stream) needs the exact user-id tag, never the name.
    assert not allowed(alice_access, "ssm:ResumeSession", own, context)
    assert not allowed(alice_access, "ssm:ResumeSession", "arn:aws:ssm:eu-central-1:123456789012:session/alice-ops-0a1b", context)
    # Through IAM Identity Center (a role): the session carries her user id as a tag.
    federated = "arn:aws:ssm:eu-central-1:123456789012:session/AWSReservedSSO_Dev-0a1b2c"
    tagged = {**context, "ssm:resourceTag/aws:ssmmessages:session-id": "AIDAALICE"}
    assert allowed(alice_access, "ssm:ResumeSession", federated, tagged)
    assert allowed(alice_access, "ec2:DescribeInstances", "*", context)
    assert allowed(alice_access, "ssm:DescribeInstanceInformation", "*", context)


@pytest.mark.parametrize(
    "instance_id, developer, role",
    [("i-computed-bob-box", "bob", "developer"), ("i-computed-production-host", None, "production"),
     # bob's box id in alice's ARN cannot happen; a box wrongly tagged alice but another id is still refused
     ("i-0fffffffffffffff0", "alice", "developer")],
    ids=["bob", "production", "other-instance-tagged-alice"],
)
def test_s29_alice_may_not_touch_other_boxes_or_production(alice_access, instance_id, developer, role):
    arn, context = _box(instance_id, developer, role)
    for action in ("ssm:StartSession", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances",
                   "ssm:SendCommand", "ec2:CreateTags"):
        assert not allowed(alice_access, action, arn, context), f"{action} on {instance_id}"


def test_s29_alice_may_not_end_bobs_sessions_or_use_other_documents(alice_access):
    _, context = _box("i-computed-alice-box", "alice")
    assert not allowed(alice_access, "ssm:TerminateSession", "arn:aws:ssm:eu-central-1:123456789012:session/bob-0a1b", context)
    bobs = {**context, "ssm:resourceTag/aws:ssmmessages:session-id": "AIDABOB"}
    assert not allowed(alice_access, "ssm:TerminateSession", "arn:aws:ssm:eu-central-1:123456789012:session/AWSReservedSSO_Dev-9f", bobs)
    assert not allowed(alice_access, "ssm:StartSession", "arn:aws:ssm:eu-central-1::document/AWS-StartPortForwardingSessionToRemoteHost", context)
    assert not allowed(alice_access, "ssm:SendCommand", "arn:aws:ssm:eu-central-1::document/AWS-RunShellScript", context)


def test_s29_every_developer_gets_a_policy_for_their_own_box_and_it_is_output(dev_plan):
    from policy.rules import violations

    for dev in NAMES:
        policy = only(dev_plan, "aws:iam/policy:Policy", f"{dev}-access")
        assert policy.inputs["tags"]["devprod:access-of"] == dev, policy.urn
        assert violations(policy.type, policy.inputs, {}) == [], policy.urn
        assert f"instance/i-computed-{dev}-box" in policy.inputs["policy"], policy.urn
        assert dev_plan.outputs["developers"][dev]["accessPolicyArn"].startswith("arn:aws:iam:"), dev


def _break(document: dict, index: int, **changes) -> dict:
    broken = json.loads(json.dumps(document))
    broken["Statement"][index].update(changes)
    return broken


@pytest.mark.parametrize(
    "index, changes, message",
    [
        (0, {"Resource": "arn:aws:ec2:eu-central-1:123456789012:instance/*"}, "name alice's one instance by ARN"),
        (0, {"Condition": {}}, "must require ssm:resourceTag/devprod:developer = 'alice'"),
        (4, {"Condition": {"StringEquals": {"aws:ResourceTag/devprod:developer": "bob"}}}, "the box must be alice's"),
        (4, {"Action": ["ec2:StartInstances", "ec2:TerminateInstances"]}, "'ec2:TerminateInstances' is not one of"),
        (2, {"Resource": "arn:aws:ssm:eu-central-1:123456789012:session/*"}, "only the caller's own sessions"),
        (1, {"Resource": "arn:aws:ssm:eu-central-1::document/AWS-RunShellScript"}, "only alice's instance and the session documents"),
        (3, {"Condition": {}}, "only the caller's own sessions"),
        (5, {"Action": "ssm:*"}, "'ssm:*' is not one of"),
    ],
    ids=["any-instance", "no-tag-condition", "tag-of-bob", "terminate", "any-session", "run-shell-document",
         "untagged-sessions", "wildcard"],
)
def test_s29_rule_refuses_each_broken_property(alice_access, index, changes, message):
    from policy.rules import s29_developer_access

    assert s29_developer_access({"policy": json.dumps(alice_access), "tags": {"devprod:access-of": "alice"}}, {}) == []
    broken = _break(alice_access, index, **changes)
    problems = s29_developer_access({"policy": json.dumps(broken), "tags": {"devprod:access-of": "alice"}}, {})
    assert any(message in p for p in problems), problems


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


def test_idle_warning_and_keep_awake_processes_reach_the_box_through_its_association(dev_raw, tmp_path):
    """devDefaults.idleWarnMinutes and keepAwakeProcesses (default, and replaced per developer) become
    the association's parameters, which the idleStop step writes into the box's settings file."""
    import os
    import subprocess

    from devprod.diff import compare
    from tests.conftest import plan_of

    base = plan_of(dev_raw, stack="dev").to_json()
    dev_raw["devprod:devDefaults"].update(idleWarnMinutes=15, keepAwakeProcesses=["make", "cargo"])
    dev_raw["devprod:developers"][2]["keepAwakeProcesses"] = ["rsync", "pg_dump"]
    head = plan_of(dev_raw, stack="dev")
    changes = compare(base, head.to_json()).changes
    assert {c.name for c in changes} == {"alice-box-setup", "bob-box-setup", "carol-box-setup"}
    assert all(c.kind == "update" and c.type.endswith("Association") for c in changes), changes
    parameters = {d: only(head, "aws:ssm/association:Association", f"{d}-box-setup").inputs["parameters"] for d in NAMES}
    assert parameters["alice"]["warnMinutes"] == "15" and parameters["alice"]["keepAwakeProcesses"] == "make cargo"
    assert parameters["carol"]["keepAwakeProcesses"] == "rsync pg_dump", "a developer's list replaces the default"
    content = json.loads(only(head, "aws:ssm/document:Document", "box-setup").inputs["content"])
    step = next(s for s in content["mainSteps"] if s["name"] == "idleStop")
    script = tmp_path / "step.sh"
    script.write_text("\n".join(step["inputs"]["runCommand"]) + "\n")
    env = {"PATH": os.environ["PATH"], "DESTDIR": str(tmp_path / "root"),
           **{f"SSM_{k}": v for k, v in parameters["carol"].items()}}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    conf = (tmp_path / "root/etc/devprod/idle-stop.conf").read_text()
    assert "WARN_MINUTES=15\n" in conf and "KEEPAWAKE_PROCESSES='rsync pg_dump'\n" in conf
