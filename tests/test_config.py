"""Pure config validation (rules I1-I4): every rule passes once and fails once."""

from __future__ import annotations

import base64
import struct
import subprocess

import pytest

from components.config import Access, ConfigError, OperatingSystem, parse_stack_config
from components.sshkey import SshKeyError, parse_public_key


def parse(raw, stack="dev"):
    return parse_stack_config(raw, project="devprod", stack=stack)


def problems(raw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    return info.value.problems


def one_problem(raw) -> str:
    found = problems(raw)
    assert len(found) == 1, found
    return found[0]


def _rsa_key(bits: int) -> str:
    def s(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    modulus = (1 << (bits - 1)) | 1
    blob = s(b"ssh-rsa") + s(b"\x01\x00\x01") + s(b"\x00" + modulus.to_bytes(bits // 8, "big"))
    return "ssh-rsa " + base64.b64encode(blob).decode() + " test@host"


def test_example_roster_is_valid(dev_raw):
    config = parse(dev_raw)
    names = [d.name for d in config.developers]
    assert names == ["alice", "bob", "carol"]
    bob = config.developers[1]
    assert bob.instance_type == "t3.xlarge" and bob.schedule is None and bob.idle_stop_minutes is None
    carol = config.developers[2]
    assert carol.access is Access.SSH and carol.allowed_ssh_cidrs == ("203.0.113.0/24",)
    assert carol.os is OperatingSystem.UBUNTU_2404 and carol.availability_zone == "eu-central-1b"
    alice = config.developers[0]
    assert alice.access is Access.SSM and alice.availability_zone == "eu-central-1a"
    assert alice.schedule.timezone == "Europe/Berlin" and alice.schedule.stop_at == "20:00"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(sshPublicKey=d["sshPublicKey"] + "\nssh-ed25519 AAAA x"), "single line"),
        (lambda d: d.update(sshPublicKey="ssh-dss AAAAB3NzaC1kc3MAAACBAP== x"), "DSA keys are refused"),
        (lambda d: d.update(sshPublicKey=_rsa_key(1024)), "RSA key is 1024 bits; at least 3072 required"),
        (lambda d: d.update(sshPublicKey="-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"), "private key"),
        (lambda d: d.update(sshPublicKey='command="/bin/sh" ' + d["sshPublicKey"]), "options are not allowed"),
        (lambda d: d.update(sshPublicKey="ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"), "key data says 'ssh-rsa'"),
        (lambda d: d.update(sshPublicKey="ssh-ed25519 not-base64!! x"), "not valid base64"),
        (lambda d: d.update(name="Alice"), "is not a valid name"),
        (lambda d: d.update(name="al ice"), "is not a valid name"),
        (lambda d: d.update(name="root"), "system account"),
        (lambda d: d.update(name="ec2-user"), "system account"),
        (lambda d: d.update(name="ec2-instance-connect"), "system account"),
        (lambda d: d.update(name="postfix"), "system account"),
        (lambda d: d.update(name="chrony"), "system account"),
        (lambda d: d.update(name="systemd-oom"), "system account"),
        (lambda d: d.update(name="fwupd-refresh"), "system account"),
        (lambda d: d.update(name="a" * 22), "is not a valid name"),
        (lambda d: d.update(instanceType="large"), "is not an EC2 instance type"),
        (lambda d: d.update(instanceType="t3.huge"), "is not an EC2 instance type"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["10.0.0.1/8"]), "has host bits set"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["0.0.0.0/0"]), "'0.0.0.0/0' is wider than /16"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["0.0.0.0/1"]), "'0.0.0.0/1' is wider than /16"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["10.0.0.0/15"]), "'10.0.0.0/15' is wider than /16"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["::/0"]), "'::/0' is wider than /48"),
        (lambda d: d.update(access="ssh", allowedSshCidrs=["2001:db8::/47"]), "'2001:db8::/47' is wider than /48"),
        (lambda d: d.update(access="ssh"), "needs this developer's own CIDRs"),
        (lambda d: d.update(access="telnet"), "ssm"),
        (lambda d: d.update(os="windows"), "al2023"),
        (lambda d: d.update(homeVolumeGiB=2), "greater than or equal to 8"),
        (lambda d: d.update(availabilityZone="eu-central-1c"), "not one of the network's zones"),
        (lambda d: d.update(schedule={"stopAt": "25:00", "timezone": "UTC"}), "24-hour time"),
        (lambda d: d.update(schedule={"stopAt": "20:00", "timezone": "Mars/Olympus"}), "IANA time zone"),
        (lambda d: d.update(schedule={"stopAt": "20:00", "days": ["monday"]}), "not weekdays"),
        (lambda d: d.update(schedule="sometimes"), "is not a schedule"),
        (lambda d: d.update(instanceTyp="t3.large"), "unknown key"),
    ],
)
def test_bad_developer_entry_names_the_developer_and_the_key(dev_raw, mutate, expected):
    entry = dev_raw["devprod:developers"][0]
    mutate(entry)
    message = one_problem(dev_raw)
    assert message.startswith("developers[0]."), message
    assert f"({entry['name']})" in message or "name" in message
    assert expected in message


def test_duplicate_names_are_case_insensitive(dev_raw):
    dup = dict(dev_raw["devprod:developers"][0])
    dup["name"] = "alice"
    dev_raw["devprod:developers"].append(dup)
    assert one_problem(dev_raw) == "developers[3].name (alice): duplicate of developers[0]; names must be unique"


def test_every_problem_is_reported_at_once(dev_raw):
    dev_raw["devprod:developers"][0]["name"] = "Root"
    dev_raw["devprod:developers"][1]["sshPublicKey"] = "ssh-dss AAAA"
    dev_raw["devprod:devDefaults"]["instanceType"] = "big"
    dev_raw["devprod:developerz"] = []
    found = problems(dev_raw)
    assert len(found) == 4, found
    assert any(p.startswith("devprod:developerz: unknown config key") for p in found)
    assert any(p.startswith("developers[1].sshPublicKey (bob): DSA") for p in found)


def test_unknown_nested_key_is_an_error(dev_raw):
    dev_raw["devprod:devDefaults"]["homeVolumeGib"] = 10
    assert one_problem(dev_raw) == "devDefaults.homeVolumeGib: unknown key (typo?)"


def test_region_is_required_and_checked(dev_raw):
    dev_raw["aws:region"] = "europe"
    assert "aws:region: 'europe' is not an AWS region" in problems(dev_raw)[0]
    del dev_raw["aws:region"]
    assert problems(dev_raw)[0].startswith("aws:region: is required")


def test_structured_values_may_arrive_as_json_text(dev_raw):
    import json

    dev_raw["devprod:developers"] = json.dumps(dev_raw["devprod:developers"])
    assert len(parse(dev_raw).developers) == 3


def test_existing_network_needs_both_ids(dev_raw):
    dev_raw["devprod:network"] = {"vpcId": "vpc-0123abcd"}
    assert "needs both vpcId and subnets" in one_problem(dev_raw)
    dev_raw["devprod:network"] = {"vpcId": "vpc-0123abcd", "subnets": {"eu-central-1a": "subnet-0123abcd"}}
    dev_raw["devprod:developers"][2].pop("availabilityZone")
    config = parse(dev_raw)
    assert config.network.existing and config.developers[2].availability_zone == "eu-central-1a"


def test_kms_alias_is_refused(dev_raw):
    dev_raw["devprod:devDefaults"]["kmsKeyArn"] = "alias/aws/ebs"
    assert "not a KMS key ARN" in one_problem(dev_raw)


def test_always_on_drops_the_idle_alarm(dev_raw):
    bob = parse(dev_raw).developers[1]
    assert bob.schedule is None and bob.idle_stop_minutes is None


@pytest.mark.parametrize("kind, bits", [("ed25519", None), ("ecdsa", "384"), ("rsa", "3072")])
def test_keys_from_ssh_keygen_parse(tmp_path, kind, bits):
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "me@host", "-f", str(tmp_path / "k")]
    if bits:
        args[4:4] = ["-b", bits]
    subprocess.run(args, check=True)
    key = parse_public_key((tmp_path / "k.pub").read_text())
    assert key.comment == "me@host"


def test_rsa_3072_is_the_floor():
    assert parse_public_key(_rsa_key(3072)).bits == 3072
    with pytest.raises(SshKeyError, match="2048 bits"):
        parse_public_key(_rsa_key(2048))


@pytest.mark.parametrize("cidrs", [["10.20.0.0/16"], ["203.0.113.7/32"], ["2001:db8:1::/48"], ["2001:db8::1/128"]])
def test_ssh_cidrs_up_to_the_widest_allowed_prefix_pass(dev_raw, cidrs):
    dev_raw["devprod:developers"][0].update(access="ssh", allowedSshCidrs=cidrs)
    assert parse(dev_raw).developers[0].allowed_ssh_cidrs == tuple(cidrs)


def test_account_id_and_instance_role_policies_are_checked(dev_raw):
    dev_raw["devprod:accountId"] = "12345"
    dev_raw["devprod:instanceRoleManagedPolicies"] = [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "not-an-arn",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
    ]
    with pytest.raises(ConfigError) as caught:
        parse(dev_raw)
    assert caught.value.problems == [
        "accountId: '12345' is not a 12-digit AWS account id (quote it in YAML)",
        "instanceRoleManagedPolicies[0]: 'arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore' grants far more "
        "than a host needs (every Parameter Store secret of the account, or more); devprod writes the SSM "
        "agent's policy itself",
        "instanceRoleManagedPolicies[1]: 'not-an-arn' is not an IAM policy ARN such as arn:aws:iam::aws:policy/NAME",
        "instanceRoleManagedPolicies[3]: 'arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy' is listed twice",
    ]


def test_account_id_and_policies_parse(dev_raw):
    dev_raw["devprod:accountId"] = "111122223333"
    dev_raw["devprod:instanceRoleManagedPolicies"] = ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]
    config = parse(dev_raw)
    assert config.account_id == "111122223333"
    assert config.instance_role_policies == ("arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",)


@pytest.mark.parametrize(
    "flow_logs, expected",
    [
        ({"traffic": "EVERYTHING"}, "network.flowLogs.traffic"),
        ({"retentionDays": 0}, "network.flowLogs.retentionDays: 0 is not a CloudWatch Logs retention"),
        ({"enabled": False}, "network.flowLogs.enabled: unknown key"),
    ],
)
def test_flow_log_settings_are_checked(dev_raw, flow_logs, expected):
    dev_raw["devprod:network"]["flowLogs"] = flow_logs
    assert one_problem(dev_raw).startswith(expected)


def test_app_uses_instance_role_must_be_a_real_boolean(prod_raw):
    prod_raw["devprod:production"]["appUsesInstanceRole"] = "yes"
    with pytest.raises(ConfigError) as caught:
        parse(prod_raw, stack="prod")
    assert caught.value.problems[0].startswith("production.appUsesInstanceRole: Input should be a valid boolean")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_live_stack_files_are_valid(stack):
    """The team's own files: only validated (any valid roster passes), never asserted on."""
    from devprod.plan import load_stack_raw
    from tests.conftest import ROOT

    raw, _ = load_stack_raw(ROOT, stack)
    parse(raw, stack=stack)
