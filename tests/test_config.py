"""Pure config validation (rules I1-I4): every rule passes once and fails once."""

from __future__ import annotations

import base64
import datetime
import re
import struct
import subprocess
import types
import typing

import pytest

from components.aws_catalog import BOTOCORE_VERSION
from components.config import Access, ConfigError, OperatingSystem, parse_stack_config
from components.sshkey import SshKeyError, parse_public_key


def parse(raw, stack=None):
    stack = stack or ("prod" if "devprod:production" in raw else "dev")
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




@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_live_stack_files_are_valid(stack):
    """The team's own files: only validated (any valid roster passes), never asserted on."""
    from devprod.plan import load_stack_raw
    from tests.conftest import ROOT

    raw, _ = load_stack_raw(ROOT, stack)
    parse(raw, stack=stack)


# --------------------------------------------------------------------------- strict types
# YAML already types every value: a value of another type is refused, never
# coerced, with the key path and the value as the file spells it.


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("homeVolumeGiB", "100", "'100' is text, not a whole number (remove the quotes)"),
        ("homeVolumeGiB", True, "true is a boolean, not a whole number"),
        ("rootVolumeGiB", 20.5, "20.5 is a decimal number, not a whole number"),
        ("rootVolumeGiB", 20.0, "20.0 is a decimal number, not a whole number"),
        ("idleStopMinutes", "60", "'60' is text, not a whole number (remove the quotes)"),
        ("protectHome", "yes", "'yes' is text, not true or false"),
        ("protectHome", "true", "'true' is text, not true or false (remove the quotes)"),
        ("protectHome", 1, "1 is a whole number, not true or false"),
        ("instanceType", 5, "5 is a whole number, not text"),
        ("availabilityZone", False, "false is a boolean, not text"),
        ("availabilityZone", datetime.date(2026, 1, 1), "2026-01-01 is a date, not text"),
        ("allowedSshCidrs", "203.0.113.0/24", "'203.0.113.0/24' is text, not a list"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_key_and_value(dev_raw, key, value, expected):
    dev_raw["devprod:developers"][2][key] = value
    assert one_problem(dev_raw) == f"developers[2].{key} (carol): {expected}"


def test_wrong_types_inside_lists_and_mappings_name_the_item(dev_raw, prod_raw):
    dev_raw["devprod:developers"][2]["allowedSshCidrs"] = ["203.0.113.0/24", 10]
    assert one_problem(dev_raw) == "developers[2].allowedSshCidrs[1] (carol): 10 is a whole number, not text"
    prod_raw["devprod:production"]["slotPorts"] = [8001, "8002"]
    assert one_problem(prod_raw) == "production.slotPorts[1]: '8002' is text, not a whole number (remove the quotes)"


def test_null_where_a_value_is_needed_says_so(dev_raw):
    dev_raw["devprod:devDefaults"]["homeVolumeGiB"] = None
    expected = "devDefaults.homeVolumeGiB: null is not a whole number; give a value or remove the key"
    assert one_problem(dev_raw) == expected


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("devprod:devDefaults", ["t3.large"], "devDefaults: ['t3.large'] is a list, not a mapping"),
        ("devprod:devDefaults", False, "devDefaults: false is a boolean, not a mapping"),
        ("devprod:network", "10.0.0.0/16", "network: '10.0.0.0/16' is text, not a mapping"),
        ("devprod:developers", {"name": "alice"}, "developers: {'name': 'alice'} is a mapping, not a list of entries"),
        ("devprod:tags", ["team"], "tags: ['team'] is a list, not a mapping of tag key to value"),
        ("devprod:tags", {"cost-center": 42}, "tags.cost-center: 42 is a whole number; tag keys and values are text"),
        ("devprod:accountId", True, "accountId: true is not a 12-digit AWS account id (quote it in YAML)"),
    ],
)
def test_a_section_of_the_wrong_shape_is_refused(dev_raw, key, value, expected):
    dev_raw[key] = value
    assert expected in problems(dev_raw)


def test_a_developer_entry_that_is_not_a_mapping_is_refused(dev_raw):
    dev_raw["devprod:developers"].append("dave")
    assert one_problem(dev_raw) == "developers[3]: 'dave' is text, not a mapping"


@pytest.mark.parametrize("value, shown", [(True, "true"), (8, "8"), (["always-on"], "['always-on']")])
def test_a_schedule_of_the_wrong_shape_is_refused(dev_raw, value, shown):
    dev_raw["devprod:developers"][0]["schedule"] = value
    expected = f"developers[0].schedule (alice): {shown} is not a schedule; give a mapping or 'always-on'"
    assert one_problem(dev_raw) == expected


def test_types_are_the_same_through_pulumis_json(dev_raw):
    """`pulumi up` hands structured values to the program as JSON text: the same value fails the same way."""
    from devprod.plan import to_pulumi_config

    dev_raw["devprod:developers"][2]["homeVolumeGiB"] = "100"
    expected = "developers[2].homeVolumeGiB (carol): '100' is text, not a whole number (remove the quotes)"
    assert one_problem(dev_raw) == expected
    assert one_problem(to_pulumi_config(dev_raw)) == expected


def _models() -> set[type]:
    from components.config import _Model

    found, todo = set(), [_Model]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def _lax_scalars(node, path=""):
    """Every int/bool/str/float schema under `node` that would coerce (pydantic's core schema)."""
    if isinstance(node, dict):
        if node.get("type") in ("int", "bool", "str", "float") and not node.get("strict"):
            yield path
        for key, value in node.items():
            yield from _lax_scalars(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _lax_scalars(value, f"{path}[{index}]")


def test_no_config_model_coerces_a_scalar():
    """The audit: every scalar of every model is strict, so new fields are too."""
    lax = {model.__name__: list(_lax_scalars(model.__pydantic_core_schema__)) for model in _models()}
    assert {name: paths for name, paths in lax.items() if paths} == {}


# Where each model sits in the suite's stack files: (raw fixture, key path).
MODEL_PLACES = {
    "DevDefaults": ("dev", ("devprod:devDefaults",)),
    "Schedule": ("dev", ("devprod:devDefaults", "schedule")),
    "DeveloperEntry": ("dev", ("devprod:developers", 0)),
    "NetworkSettings": ("dev", ("devprod:network",)),
    "FlowLogSettings": ("dev", ("devprod:network", "flowLogs")),
    "ProductionSettings": ("prod", ("devprod:production",)),
    "PipelineSettings": ("prod", ("devprod:pipeline",)),
    "CiSettings": ("prod", ("devprod:ci",)),
    "DeployWindow": ("prod", ("devprod:pipeline", "deployWindow")),
}
# A model with required fields gets them, so only the field under test is wrong.
PLACE_BASE = {("devprod:pipeline", "deployWindow"): {"cron": "* * 9-16 ? * MON-FRI *"}}


def _scalar(annotation):
    """int/bool/str/float under Optional/Annotated/tuple[...]/dict[...] (None for enums, models, unions)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _scalar(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = {_scalar(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin in (tuple, dict):
        inner = _scalar(args[-1] if origin is dict else args[0])
        return (origin.__name__, inner) if inner else None
    return annotation.__name__ if annotation in (int, bool, str, float) else None


WRONG_VALUE = {"int": ("12", "'12' is text, not a whole number (remove the quotes)"),
               "bool": (1, "1 is a whole number, not true or false"),
               "str": (True, "true is a boolean, not text"),
               "float": ("5.5", "'5.5' is text, not a number (remove the quotes)")}


def _wrong_field_cases():
    cases = []
    for model in sorted(_models(), key=lambda m: m.__name__):
        stack, place = MODEL_PLACES[model.__name__]
        for name, info in model.model_fields.items():
            kind = _scalar(info.annotation)
            if kind is not None:
                # a fixed-length tuple (slotPorts) keeps its other, valid items
                rest = info.default[1:] if isinstance(info.default, tuple) else ()
                cases.append(pytest.param(stack, place, info.alias or name, kind, rest, id=f"{model.__name__}.{name}"))
    return cases


def test_every_model_has_a_place_in_the_typing_test():
    assert {m.__name__ for m in _models()} == set(MODEL_PLACES)


@pytest.mark.parametrize("stack, place, key, kind, rest", _wrong_field_cases())
def test_every_field_refuses_a_value_of_another_type(dev_raw, prod_raw, stack, place, key, kind, rest):
    raw = dev_raw if stack == "dev" else prod_raw
    container, item_key = raw, ""
    for step in place:
        container = container.setdefault(step, {}) if isinstance(step, str) else container[step]
    for base_key, value in PLACE_BASE.get(place, {}).items():
        container.setdefault(base_key, value)
    bad, expected = WRONG_VALUE[kind if isinstance(kind, str) else kind[1]]
    if isinstance(kind, tuple):  # a list or mapping: one wrong item inside it
        bad, item_key = ([bad, *rest], "[0]") if kind[0] == "tuple" else ({"k": bad}, ".k")
    container[key] = bad
    path = ".".join(str(s).removeprefix("devprod:") for s in place).replace(".0", "[0]")
    who = " (alice)" if place[0] == "devprod:developers" and key != "name" else ""
    assert one_problem(raw) == f"{path}.{key}{item_key}{who}: {expected}"


# --------------------------------------------------------------------------- instance types and regions


@pytest.mark.parametrize(
    "value, expected",
    [
        ("t3.24xlarge", "'t3.24xlarge' is not an EC2 instance type: t3 comes in nano, micro, small, medium, large, "
                        "xlarge, 2xlarge (nearest: t3.2xlarge)"),
        ("m7i.3xlarge", "(nearest: m7i.4xlarge)"),
        ("t3.larg", "(nearest: t3.large)"),
        ("c7g.metal-48xl", "(nearest: c7g.metal)"),
        ("m7l.large", "'m7l.large' is not an EC2 instance type; did you mean m7i.large, m7g.large or m7a.large? "
                      "(if AWS added it after botocore "),
        ("t3", "'t3' is not an EC2 instance type; expected family.size such as t3.large"),
        ("T3.large", "did you mean t3.large"),
    ],
)
def test_instance_types_are_checked_against_the_table(dev_raw, value, expected):
    dev_raw["devprod:developers"][1]["instanceType"] = value
    message = one_problem(dev_raw)
    assert message.startswith("developers[1].instanceType (bob): "), message
    assert expected in message


@pytest.mark.parametrize("value", ["t3.nano", "m7i-flex.large", "c7gn.metal", "u-6tb1.112xlarge", "m7i.metal-48xl"])
def test_real_instance_types_pass(dev_raw, prod_raw, value):
    dev_raw["devprod:devDefaults"]["instanceType"] = value
    assert {d.instance_type for d in parse(dev_raw).developers} == {value, "t3.xlarge"}
    prod_raw["devprod:production"]["instanceType"] = value
    assert parse(prod_raw).production.instance_type == value


def test_production_instance_type_is_checked_too(prod_raw):
    prod_raw["devprod:production"]["instanceType"] = "t3.24xlarge"
    assert one_problem(prod_raw).startswith("production.instanceType: 't3.24xlarge' is not an EC2 instance type: t3")


def test_a_region_typo_is_blamed_on_the_region_not_the_zones(dev_raw):
    dev_raw["aws:region"] = "eu-cental-1"
    assert one_problem(dev_raw) == (
        "aws:region: 'eu-cental-1' is not an AWS region; did you mean eu-central-1? (regions from botocore "
        f"{BOTOCORE_VERSION})"
    )


@pytest.mark.parametrize(
    "region", ["us-gov-west-1", "cn-north-1", "mx-central-1", "ap-southeast-7", "us-isob-east-1", "eusc-de-east-1"]
)
def test_regions_of_every_partition_pass_and_zones_follow_them(dev_raw, region):
    dev_raw["aws:region"] = region
    dev_raw["devprod:network"]["availabilityZones"] = [f"{region}a", f"{region}b"]
    dev_raw["devprod:developers"][2]["availabilityZone"] = f"{region}b"
    assert parse(dev_raw).developers[0].availability_zone == f"{region}a"


def test_a_region_that_is_not_text_is_refused(dev_raw):
    dev_raw["aws:region"] = 1
    assert one_problem(dev_raw) == "aws:region: 1 is a whole number, not a region name such as eu-central-1"


@pytest.mark.parametrize("zone", ["eu-central-1", "eu-cental-1a", "eu-central-1A", "eu-central-1-a"])
def test_zone_names_are_a_known_region_plus_a_letter(dev_raw, zone):
    dev_raw["devprod:network"]["availabilityZones"] = ["eu-central-1a", zone]
    assert one_problem(dev_raw) == (
        f"network.availabilityZones: [{zone!r}] are not availability zone names such as eu-central-1a"
    )


def test_zones_must_belong_to_the_region(dev_raw):
    dev_raw["aws:region"] = "eu-central-2"
    assert one_problem(dev_raw) == (
        "network.availabilityZones: ['eu-central-1a', 'eu-central-1b'] are not zones of region 'eu-central-2' "
        "(aws:region)"
    )


def test_an_existing_networks_subnets_must_be_in_the_region(dev_raw):
    dev_raw["devprod:network"] = {"vpcId": "vpc-0123abcd", "subnets": {"us-east-1a": "subnet-0123abcd"}}
    dev_raw["devprod:developers"][2].pop("availabilityZone")
    assert one_problem(dev_raw) == (
        "network.subnets: ['us-east-1a'] are not zones of region 'eu-central-1' (aws:region)"
    )


def test_the_aws_table_is_what_the_generator_writes():
    """A hand edit of components/aws_catalog.py (a typo, a reordering) shows up here."""
    from components import aws_catalog, aws_names

    text = aws_names.render_catalog(aws_catalog.BOTOCORE_VERSION, aws_catalog.REGIONS, aws_catalog.INSTANCE_SIZES)
    assert aws_names.CATALOG.read_text() == text


def test_every_name_in_the_aws_table_is_known_to_botocore():
    """The table only ever lags AWS: botocore (a test dependency) knows every region and type in it."""
    from components import aws_catalog, aws_names

    _, regions, sizes = aws_names.catalog_from_botocore()
    assert set(aws_catalog.REGIONS) - set(regions) == set()
    ours = {f"{f}.{s}" for f, group in aws_catalog.INSTANCE_SIZES.items() for s in group}
    known = {f"{f}.{s}" for f, group in sizes.items() for s in group}
    assert ours - known == set()


def test_the_refresh_command_writes_the_table(tmp_path, monkeypatch):
    from components import aws_names

    monkeypatch.setattr(aws_names, "CATALOG", tmp_path / "aws_catalog.py")
    assert aws_names.main(["--refresh"]) == 0
    namespace: dict = {}
    exec((tmp_path / "aws_catalog.py").read_text(), namespace)
    assert "t3" in namespace["INSTANCE_SIZES"] and "eu-central-1" in namespace["REGIONS"]
    assert aws_names.main([]) == 2


# --------------------------------------------------------------------------- key blobs, branch by branch


def _s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _line(key_type: str, blob: bytes) -> str:
    return f"{key_type} {base64.b64encode(blob).decode()} me@host"


P256 = b"\x04" + bytes(64)
SK_ED = "sk-ssh-ed25519@openssh.com"
SK_EC = "sk-ecdsa-sha2-nistp256@openssh.com"


@pytest.mark.parametrize(
    "key_type, blob, bits",
    [
        (SK_ED, _s(SK_ED.encode()) + _s(bytes(32)) + _s(b"ssh:"), 256),
        (SK_EC, _s(SK_EC.encode()) + _s(b"nistp256") + _s(P256) + _s(b"ssh:"), 256),
        ("ecdsa-sha2-nistp521", _s(b"ecdsa-sha2-nistp521") + _s(b"nistp521") + _s(b"\x04" + bytes(132)), 521),
    ],
)
def test_security_key_and_ecdsa_blobs_parse(key_type, blob, bits):
    assert parse_public_key(_line(key_type, blob)).bits == bits


@pytest.mark.parametrize(
    "key_type, blob, expected",
    [
        ("ssh-ed25519", _s(b"ssh-ed25519") + _s(bytes(31)), "ed25519 key is 31 bytes; 32 expected"),
        ("ssh-ed25519", _s(b"ssh-ed25519") + _s(bytes(32)) + b"x", "key data has trailing bytes"),
        ("ssh-ed25519", _s(b"ssh-ed25519") + b"\x00\x00\x00\x40" + bytes(8), "key blob is truncated"),
        (SK_ED, _s(SK_ED.encode()) + _s(bytes(32)), "key blob is truncated"),
        ("ssh-rsa", _s(b"ssh-rsa") + _s(b"") + _s(b"\x01"), "RSA key data is empty"),
        ("ecdsa-sha2-nistp256", _s(b"ecdsa-sha2-nistp256") + _s(b"nistp384") + _s(P256), "does not match type"),
        ("ecdsa-sha2-nistp256", _s(b"ecdsa-sha2-nistp256") + _s(b"nistp256") + _s(b"\x02" + bytes(32)),
         "ECDSA point is not an uncompressed curve point"),
    ],
)
def test_malformed_key_blobs_are_refused_with_the_reason(key_type, blob, expected):
    with pytest.raises(SshKeyError, match=re.escape(expected)):
        parse_public_key(_line(key_type, blob))


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, "must be a string"),
        ("   ", "is empty"),
        ("ssh-ed25519", "expected '<type> <base64> [comment]'"),
        ("ssh-foo AAAA", "unsupported key type 'ssh-foo'"),
        ('from="10.0.0.1" AAAA', "authorized_keys options are not allowed"),
        ("ssh-ed25519 AAAA me;rm", "comment 'me;rm' has characters outside"),
    ],
)
def test_malformed_key_lines_are_refused_with_the_reason(text, expected):
    with pytest.raises(SshKeyError, match=re.escape(expected)):
        parse_public_key(text)


# --------------------------------------------------------------------------- idle warning, keep-awake processes


def test_idle_warning_and_keep_awake_defaults(dev_raw):
    alice, bob, carol = parse(dev_raw).developers
    assert alice.idle_warn_minutes == 10 and alice.keep_awake_processes == ()
    dev_raw["devprod:devDefaults"].update(idleWarnMinutes=5, keepAwakeProcesses=["make", "cargo"])
    dev_raw["devprod:developers"][1]["keepAwakeProcesses"] = []
    alice, bob, carol = parse(dev_raw).developers
    assert alice.idle_warn_minutes == 5 and alice.keep_awake_processes == ("make", "cargo")
    assert bob.keep_awake_processes == (), "a developer's own list (here empty) replaces the default"


@pytest.mark.parametrize(
    "where, key, value, expected",
    [
        ("defaults", "idleWarnMinutes", 0, "devDefaults.idleWarnMinutes: Input should be greater than or equal to 1 (got 0)"),
        ("defaults", "idleWarnMinutes", 61, "devDefaults.idleWarnMinutes: Input should be less than or equal to 60 (got 61)"),
        ("defaults", "idleWarnMinutes", "10", "devDefaults.idleWarnMinutes: '10' is text, not a whole number (remove the quotes)"),
        ("defaults", "idleWarnMinutes", 60, "devDefaults.idleWarnMinutes: 60 must be less than devDefaults.idleStopMinutes (60): the warning comes before the stop"),
        ("defaults", "keepAwakeProcesses", "make", "devDefaults.keepAwakeProcesses: 'make' is text, not a list"),
        ("defaults", "keepAwakeProcesses", ["make", "a b"], "devDefaults.keepAwakeProcesses: ['a b'] are not process names as in /proc/PID/comm (1-15 of A-Z a-z 0-9 _ . + -)"),
        ("defaults", "keepAwakeProcesses", ["x" * 16], f"devDefaults.keepAwakeProcesses: ['{'x' * 16}'] are not process names"),
        ("defaults", "keepAwakeProcesses", [f"p{i}" for i in range(21)], "devDefaults.keepAwakeProcesses: lists 21 names; at most 20"),
        ("defaults", "keepAwakeProcesses", ["make", "make"], "devDefaults.keepAwakeProcesses: ['make', 'make'] names a process twice"),
        ("carol", "keepAwakeProcesses", ["rm;reboot"], "developers[2].keepAwakeProcesses (carol): ['rm;reboot'] are not process names"),
        ("carol", "keepAwakeProcesses", ["make", 3], "developers[2].keepAwakeProcesses[1] (carol): 3 is a whole number, not text"),
        ("carol", "idleStopMinutes", 10, "developers[2].idleStopMinutes (carol): 10 must be more than devDefaults.idleWarnMinutes (10): the warning comes before the stop"),
    ],
)
def test_idle_warning_and_keep_awake_are_validated_with_key_paths(dev_raw, where, key, value, expected):
    target = dev_raw["devprod:devDefaults"] if where == "defaults" else dev_raw["devprod:developers"][2]
    target[key] = value
    assert one_problem(dev_raw).startswith(expected)


# --------------------------------------------------------------------------- tools and dotfiles


def test_tools_and_dotfiles_are_optional_per_developer(dev_raw):
    from components.config import Tool

    dev_raw["devprod:developers"][0].update(tools=["docker", "python"], dotfiles="https://github.com/alice/dotfiles.git")
    alice, bob, _ = parse(dev_raw).developers
    assert alice.tools == (Tool.DOCKER, Tool.PYTHON) and alice.dotfiles == "https://github.com/alice/dotfiles.git"
    assert bob.tools == () and bob.dotfiles is None


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("tools", ["docker", "emacs"], "developers[0].tools[1] (alice): Input should be 'docker', 'git', 'node' or 'python'"),
        ("tools", "docker", "developers[0].tools (alice): 'docker' is text, not a list"),
        ("tools", ["git", "git"], "developers[0].tools (alice): ['git', 'git'] names a tool twice"),
        ("dotfiles", "git@github.com:alice/dotfiles.git", "developers[0].dotfiles (alice): 'git@github.com:alice/dotfiles.git' is not an https git URL"),
        ("dotfiles", "http://github.com/alice/dotfiles", "is not an https git URL"),
        ("dotfiles", "https://alice:secret@github.com/alice/dotfiles", "(no user:password@, query or fragment)"),
        ("dotfiles", "https://github.com/alice/dotfiles?x=1", "is not an https git URL"),
        ("dotfiles", "https://github.com/alice/$(reboot)", "is not an https git URL"),
        ("dotfiles", "https://github.com/alice/../../etc", "is not an https git URL"),
        ("dotfiles", 42, "developers[0].dotfiles (alice): 42 is a whole number, not text"),
    ],
)
def test_tools_and_dotfiles_are_validated_with_key_paths(dev_raw, key, value, expected):
    dev_raw["devprod:developers"][0][key] = value
    problem = one_problem(dev_raw)
    assert expected in problem, problem
