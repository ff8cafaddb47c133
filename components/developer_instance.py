"""DeveloperInstance: one developer's EC2 box, its persistent home volume, auto-stop, and who may use it."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import pulumi
import pulumi_aws as aws

from components.common import (
    METADATA_OPTIONS,
    apply_all,
    egress_anywhere,
    encrypted_root,
    heredoc_body,
    instance_arn,
    InstanceRoleSpec,
    instance_role,
    policy_document,
    script_with_settings,
    service_trust_policy,
    tags_for,
)
from components.config import Access, DeveloperSpec, OperatingSystem, Schedule
from devprod.contracts import ACCESS_TAG, DEVELOPER_ROLE, DEVELOPER_TAG, ROLE_TAG

REPO = Path(__file__).resolve().parent.parent
USER_DATA_FILE = REPO / "scripts" / "user-data" / "dev.sh"
# What the box's SSM document installs and runs (see box_document).
HOST_DIR = REPO / "scripts" / "host"
IDLE_STOP_SCRIPT = HOST_DIR / "devprod-idle-stop.py"
KEEPAWAKE_SCRIPT = HOST_DIR / "devprod-keepawake.sh"
BOX_SETUP_SCRIPT = HOST_DIR / "devprod-box-setup.sh"
AUTHORIZED_KEYS_SCRIPT = HOST_DIR / "devprod-authorized-keys.py"
TOOLS_SCRIPT = HOST_DIR / "devprod-box-tools.sh"
# The association also re-applies on this schedule: a box that was stopped
# during `pulumi up`, or whose key file was edited, converges within it.
BOX_SETUP_SCHEDULE = "rate(30 minutes)"
# The stack's one box-setup document (box_setup_document).
BOX_SETUP_DOCUMENT = "box-setup"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user data (S7)
HOME_DEVICE = "/dev/sdh"
# Developer uids start here; the offset keeps them clear of image accounts.
UID_BASE = 2000

AMI_PARAMETERS = {
    (OperatingSystem.AL2023, "x86_64"): "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    (OperatingSystem.AL2023, "arm64"): "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    (OperatingSystem.UBUNTU_2404, "x86_64"): "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    (OperatingSystem.UBUNTU_2404, "arm64"): "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
}
_GRAVITON_FAMILY = re.compile(r"^[a-z]+[0-9]+[a-z]*g[a-z]*$")
_CRON_DAYS = {"mon": "MON", "tue": "TUE", "wed": "WED", "thu": "THU", "fri": "FRI", "sat": "SAT", "sun": "SUN"}


def architecture(instance_type: str) -> str:
    """Graviton families (t4g, m7g, c7gn, ...) need arm64 images."""
    family = instance_type.split(".", 1)[0]
    return "arm64" if _GRAVITON_FAMILY.match(family) else "x86_64"


def ami_parameter(os_: OperatingSystem, instance_type: str) -> str:
    return AMI_PARAMETERS[(os_, architecture(instance_type))]


def cron_expression(at: str, days: tuple[str, ...]) -> str:
    """EventBridge Scheduler cron for HH:MM on the given weekdays (local time of the schedule)."""
    hour, minute = (int(p) for p in at.split(":"))
    return f"cron({minute} {hour} ? * {','.join(_CRON_DAYS[d] for d in days)} *)"


def linux_uid(name: str) -> int:
    # Stable per name (not per roster position) so a box rebuilt after others
    # left still owns its files. Each box holds one developer, so two names
    # sharing a uid on different boxes is harmless.
    return UID_BASE + zlib.crc32(name.encode()) % 60000


# User-data settings that reach a running box through its box-setup
# association, so a change to them needs no replacement (the plan diff does
# not call it ignored).
USER_DATA_SETTINGS_CARRIED_BY_ASSOCIATION = ("SSH_PUBLIC_KEY",)


def render_user_data(dev: DeveloperSpec, home_volume_id: str) -> str:
    """The bootstrap script with the developer's validated settings prepended."""
    family = "al2023" if dev.os is OperatingSystem.AL2023 else "ubuntu"
    settings = [
        f"DEV_USER={shlex.quote(dev.name)}",
        f"DEV_UID={linux_uid(dev.name)}",
        f"SSH_PUBLIC_KEY={shlex.quote(dev.ssh_key.line)}",
        f"HOME_VOLUME_ID={shlex.quote(home_volume_id)}",
        f"OS_FAMILY={family}",
    ]
    script = script_with_settings(USER_DATA_FILE, settings, "DeveloperInstance")
    if len(script.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user data for {dev.name} is {len(script.encode())} bytes; EC2 allows 16384")
    return script


def ssh_config_block(host: str, user: str, address: str, access: Access, region: str) -> str:
    lines = [f"Host {host}", f"  HostName {address}", f"  User {user}"]
    if access is Access.SSM:
        # The tunnel runs over the SSM agent's outbound channel: no inbound port.
        # `devprod box connect` starts a stopped box and waits for its agent
        # (progress on stderr, which ssh shows), then runs `aws ssm
        # start-session --document-name AWS-StartSSHSession` itself.
        lines.append(f"  ProxyCommand devprod box connect {user} --instance-id %h --port %p --region {region}")
    return "\n".join(lines) + "\n"


# Every document parameter is pattern-checked by SSM before the box sees it (S18).
BOX_PARAMETERS: dict[str, tuple[str, str]] = {
    "user": ("^[a-z][a-z0-9-]{1,20}$", "The developer's Linux user"),
    "publicKey": (
        "^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh[.]com|"
        "sk-ecdsa-sha2-nistp256@openssh[.]com) [A-Za-z0-9+/]+={0,2}( [A-Za-z0-9@._+=:,/-]{1,100})?$",
        "The developer's one OpenSSH public key (validated again on the box)",
    ),
    "idleMinutes": ("^[0-9]{1,4}$", "Idle stop window in minutes; 0 turns the idle stop off"),
    "cpuPercent": ("^[0-9]{1,2}([.][0-9]{1,2})?$", "Busy share below which the box counts as idle"),
    "warnMinutes": ("^[0-9]{1,3}$", "Warn terminals this many minutes before an idle stop"),
    "keepAwakeProcesses": (
        "^([A-Za-z0-9_.+-]{1,15}( [A-Za-z0-9_.+-]{1,15})*)?$",
        "Process names (as in /proc/PID/comm) that keep the box awake",
    ),
    "tools": (
        "^((docker|git|node|python)( (docker|git|node|python)){0,3})?$",
        "Tools to install from the distribution's packages",
    ),
    "dotfiles": (
        "^(https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?/[A-Za-z0-9._~/-]{1,200})?$",
        "https git URL of the developer's dotfiles, cloned and installed once as the developer",
    ),
    "revision": ("^[0-9a-f]{64}$", "sha256 of this document's steps: a new script re-runs the association"),
}
# Parameters a box may go without (an older association passes none).
OPTIONAL_BOX_PARAMETERS = ("keepAwakeProcesses", "tools", "dotfiles")


def _heredoc(target: str, path: Path, delimiter: str) -> list[str]:
    return [f"cat >{target} <<'{delimiter}'", heredoc_body(path, delimiter).rstrip("\n"), delimiter]


def box_steps() -> list[dict]:
    """The document's steps: install the idle stop, the developer's key, then their tools and dotfiles.

    Each script travels byte for byte in a quoted heredoc; parameters reach it
    only as SSM_* environment variables, never pasted into shell text (S18).
    """
    setup = [
        "set -eu",
        'export IDLE_MINUTES="${SSM_idleMinutes:?}" CPU_PERCENT="${SSM_cpuPercent:?}" WARN_MINUTES="${SSM_warnMinutes:?}"',
        'export KEEPAWAKE_PROCESSES="${SSM_keepAwakeProcesses:-}"',
        'STAGED="$(mktemp -d)"',
        "export STAGED",
        "trap 'rm -rf \"$STAGED\"' EXIT",
        *_heredoc('"$STAGED/devprod-idle-stop.py"', IDLE_STOP_SCRIPT, "DEVPROD_IDLE_STOP"),
        *_heredoc('"$STAGED/devprod-keepawake.sh"', KEEPAWAKE_SCRIPT, "DEVPROD_KEEPAWAKE"),
        *_heredoc('"$STAGED/devprod-box-setup.sh"', BOX_SETUP_SCRIPT, "DEVPROD_BOX_SETUP"),
        'bash "$STAGED/devprod-box-setup.sh"',
    ]
    keys = [
        "set -eu",
        'export DEVPROD_USER="${SSM_user:?}" DEVPROD_PUBLIC_KEY="${SSM_publicKey:?}"',
        "exec python3 - <<'DEVPROD_AUTHORIZED_KEYS'",
        heredoc_body(AUTHORIZED_KEYS_SCRIPT, "DEVPROD_AUTHORIZED_KEYS").rstrip("\n"),
        "DEVPROD_AUTHORIZED_KEYS",
    ]
    tools = [
        "set -eu",
        'export DEVPROD_USER="${SSM_user:?}" TOOLS="${SSM_tools:-}" DOTFILES="${SSM_dotfiles:-}"',
        'STAGED="$(mktemp -d)"',
        "trap 'rm -rf \"$STAGED\"' EXIT",
        *_heredoc('"$STAGED/devprod-box-tools.sh"', TOOLS_SCRIPT, "DEVPROD_BOX_TOOLS"),
        # No stdin: nothing the developer's install script runs can read the step's text.
        'bash "$STAGED/devprod-box-tools.sh" </dev/null',
    ]
    linux = {"StringEquals": ["platformType", "Linux"]}
    return [
        {"action": "aws:runShellScript", "name": "idleStop", "precondition": linux,
         "inputs": {"timeoutSeconds": 300, "runCommand": setup}},
        {"action": "aws:runShellScript", "name": "authorizedKeys", "precondition": linux,
         "inputs": {"timeoutSeconds": 120, "runCommand": keys}},
        # Package installs plus a dotfiles install script of at most 600 s.
        {"action": "aws:runShellScript", "name": "tools", "precondition": linux,
         "inputs": {"timeoutSeconds": 1500, "runCommand": tools}},
    ]


@lru_cache(maxsize=None)  # the same for every box: built once per plan, not once per developer
def box_revision() -> str:
    return hashlib.sha256(json.dumps(box_steps(), sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=None)
def box_document() -> str:
    """SSM Command document (schema 2.2) that sets a running box to what the stack config says.

    Why a document and an association rather than user data: user data runs
    once (and devprod ignores changes to it, R1) and is capped at 16 KB, so a
    rotated key or a new idle window would never reach a running box. `pulumi
    up` updates the association's parameters in place; State Manager applies an
    updated association at once, and again on BOX_SETUP_SCHEDULE.
    """
    parameters = {
        name: {"type": "String", "description": text, "allowedPattern": pattern, "interpolationType": "ENV_VAR"}
        for name, (pattern, text) in BOX_PARAMETERS.items()
    }
    for name in OPTIONAL_BOX_PARAMETERS:
        parameters[name]["default"] = ""
    document = {
        "schemaVersion": "2.2",
        "description": "devprod: install the idle stop, the developer's SSH key, tools and dotfiles on their box",
        "parameters": parameters,
        "mainSteps": box_steps(),
    }
    return json.dumps(document, indent=2)


def box_setup_document(tags: Mapping[str, str]) -> aws.ssm.Document:
    """The stack's one box-setup document, which every box's association runs with its own
    parameters (`box_parameters`). One for all boxes, not one per box: the content is the
    same for every box, and SSM refuses more than 500 documents in an account and region
    (DocumentLimitExceeded), which one per box would reach at a few hundred developers. A
    change to the scripts updates this one document. A box's role may read it, never change
    it (`state_manager_statements`)."""
    return aws.ssm.Document(
        BOX_SETUP_DOCUMENT,
        document_type="Command",
        document_format="JSON",
        content=box_document(),
        tags=tags_for({**tags, ROLE_TAG: DEVELOPER_ROLE}, BOX_SETUP_DOCUMENT),
    )


def box_parameters(dev: DeveloperSpec) -> dict[str, str]:
    """What the association passes to the document for this developer; each value matches its pattern."""
    values = {
        "user": dev.name,
        "publicKey": dev.ssh_key.line,
        "idleMinutes": str(dev.idle_stop_minutes or 0),
        "cpuPercent": f"{round(dev.idle_cpu_percent, 2):g}",
        "warnMinutes": str(dev.idle_warn_minutes),
        "keepAwakeProcesses": " ".join(dev.keep_awake_processes),
        "tools": " ".join(tool.value for tool in dev.tools),
        "dotfiles": dev.dotfiles or "",
        "revision": box_revision(),
    }
    for name, value in values.items():
        if not re.match(BOX_PARAMETERS[name][0], value):
            raise ValueError(f"{name} for {dev.name} is {value!r}, outside {BOX_PARAMETERS[name][0]}")
    return values


# Documents a developer may open sessions with: a shell (Session Manager's
# default document, owned by the account) and SSH over SSM (owned by AWS: its
# ARN has no account; names starting with AWS- cannot be created by accounts).
SESSION_DOCUMENTS = ("SSM-SessionManagerRunShell", "AWS-StartSSHSession")
# Session Manager's own tag on each session: the starting caller's user id.
SESSION_OWNER_TAG = "ssm:resourceTag/aws:ssmmessages:session-id"


def developer_access_statements(region: str, account: str, instance_id: str, developer: str) -> list[dict]:
    """S29: sessions, SSH over SSM, start and stop on this developer's own box; nothing else that acts.

    The instance is named by ARN and, in depth, by its developer tag: nobody
    may tag boxes through this policy, and neither check alone names bob's box.
    """
    instance = instance_arn(region, account, instance_id)
    documents = [
        f"arn:aws:ssm:{region}:{account}:document/SSM-SessionManagerRunShell",
        f"arn:aws:ssm:{region}:*:document/AWS-StartSSHSession",
    ]
    return [
        {
            "Sid": "SessionsOnOwnBox",
            "Effect": "Allow",
            "Action": "ssm:StartSession",
            "Resource": instance,
            "Condition": {
                "StringEquals": {f"ssm:resourceTag/{DEVELOPER_TAG}": developer},
                # Also require permission on the session document when none is named.
                "BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"},
            },
        },
        {"Sid": "SessionDocuments", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": documents},
        {
            # End only your own sessions, the two ways AWS documents ("Allow a
            # user to end only sessions they started"): an IAM user's session
            # ids start with their name; for roles (IAM Identity Center) Session
            # Manager tags each session with the caller's user id. A name prefix
            # also matches longer names ("ann-*" matches "ann-marie-0a1b..."), so
            # by name only ending a session is allowed: resuming one hands over
            # its stream, which only the exact user-id match may do.
            "Sid": "OwnSessionsOnly",
            "Effect": "Allow",
            "Action": "ssm:TerminateSession",
            "Resource": f"arn:aws:ssm:{region}:{account}:session/${{aws:username}}-*",
        },
        {
            "Sid": "OwnSessionsOnlyFederated",
            "Effect": "Allow",
            "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
            "Resource": f"arn:aws:ssm:{region}:{account}:session/*",
            "Condition": {"StringLike": {SESSION_OWNER_TAG: "${aws:userid}"}},
        },
        {
            "Sid": "StartStopOwnBox",
            "Effect": "Allow",
            "Action": ["ec2:StartInstances", "ec2:StopInstances"],
            "Resource": instance,
            "Condition": {"StringEquals": {f"aws:ResourceTag/{DEVELOPER_TAG}": developer}},
        },
        {
            # No resource-level scope exists for these reads (start-on-connect polls them).
            "Sid": "SeeBoxState",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ssm:DescribeInstanceInformation"],
            "Resource": "*",
        },
    ]


def state_manager_statements(region: str, account: str, instance_id: str, document_arn: str, association_id: str) -> list[dict]:
    """What the SSM agent on the box needs to fetch and report its own association, scoped to it.

    The actions are the association ones of AmazonSSMManagedInstanceCore
    (which devprod does not attach, S20).
    """
    instance = instance_arn(region, account, instance_id)
    association = f"arn:aws:ssm:{region}:{account}:association/{association_id}"
    return [
        {"Sid": "ReadBoxSetupDocument", "Effect": "Allow", "Action": ["ssm:GetDocument", "ssm:DescribeDocument"], "Resource": document_arn},
        {
            "Sid": "RunOwnAssociation",
            "Effect": "Allow",
            "Action": [
                "ssm:ListInstanceAssociations",
                "ssm:DescribeAssociation",
                "ssm:UpdateInstanceAssociationStatus",
                "ssm:PutComplianceItems",
            ],
            "Resource": [instance, association, document_arn],
        },
    ]


@dataclass(frozen=True)
class DeveloperInstanceArgs:
    developer: DeveloperSpec
    subnet_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    region: str
    account_id: pulumi.Input[str]
    host_alias: str
    # The stack's one box-setup document (`box_setup_document`), which every box's
    # association runs with its own parameters: its name and ARN.
    setup_document_name: pulumi.Input[str]
    setup_document_arn: pulumi.Input[str]
    # The image id; by default the current one behind AWS's public SSM
    # parameter for the OS and architecture (S6), looked up once per image.
    ami: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # Managed policies the stack config allows on instance roles (none by default).
    managed_policies: tuple[str, ...] = ()


class DeveloperInstance(pulumi.ComponentResource):
    """A box per developer: SSM-only by default, home on a retained volume, stopped off-hours."""

    instance_id: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    home_volume_id: pulumi.Output[str]
    ssh_config: pulumi.Output[str]
    vscode: pulumi.Output[str]
    # The managed policy to attach to this developer's IAM identity (S29).
    access_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: DeveloperInstanceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:compute:DeveloperInstance", name, None, opts)
        dev = args.developer
        self._name, self._args = name, args
        self._tags = {**args.tags, DEVELOPER_TAG: dev.name, ROLE_TAG: DEVELOPER_ROLE}

        # S21: the box's role holds the SSM agent's channels (and, below, its
        # own association) and nothing else: no Parameter Store, no KMS, so
        # sudo on a box reaches no secret.
        role, profile = instance_role(
            self,
            name,
            f"devprod box of {dev.name}: SSM agent only",
            self._tags,
            InstanceRoleSpec(region=args.region, account_id=args.account_id, managed_policies=args.managed_policies),
        )
        home = self._home_volume()
        instance = self._box(profile, self._security_group(), home)
        address, public_ip = self._address(instance)
        if dev.schedule is not None:
            self._schedules(name, dev.schedule, instance.id, args, self._tags)
        self._box_setup(role, instance)
        access = self._access_policy(instance.id)

        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.public_ip = public_ip
        self.home_volume_id = home.id
        self.ssh_config = apply_all(
            lambda a: ssh_config_block(args.host_alias, dev.name, a, dev.access, args.region), address
        )
        self.vscode = pulumi.Output.from_input(
            f"code --remote ssh-remote+{args.host_alias} /home/{dev.name}"
        )
        self.access_policy_arn = access.arn
        self.register_outputs(
            {
                "instanceId": self.instance_id,
                "privateIp": self.private_ip,
                "publicIp": self.public_ip,
                "homeVolumeId": self.home_volume_id,
                "sshConfig": self.ssh_config,
                "vscode": self.vscode,
                "accessPolicyArn": self.access_policy_arn,
            }
        )

    def _security_group(self) -> aws.ec2.SecurityGroup:
        """No ingress for SSM access (S5); port 22 from the developer's own ranges for SSH."""
        dev, name = self._args.developer, self._name
        ingress = []
        if dev.access is Access.SSH:
            ingress.append(
                {
                    "description": f"SSH for {dev.name} from their own ranges",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr_blocks": [c for c in dev.allowed_ssh_cidrs if ":" not in c],
                    "ipv6_cidr_blocks": [c for c in dev.allowed_ssh_cidrs if ":" in c],
                }
            )
        return aws.ec2.SecurityGroup(
            f"{name}-sg",
            description=f"devprod box of {dev.name}",
            vpc_id=self._args.vpc_id,
            ingress=ingress,
            egress=egress_anywhere("Outbound for SSM, package mirrors and git remotes"),
            tags=tags_for(self._tags, f"{name}-sg"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _home_volume(self) -> aws.ebs.Volume:
        """The home lives in the box's pinned zone and outlives the box: retain_on_delete
        keeps it when the developer leaves the roster (R2)."""
        dev, name = self._args.developer, self._name
        return aws.ebs.Volume(
            f"{name}-home",
            availability_zone=dev.availability_zone,
            size=dev.home_volume_gib,
            type="gp3",
            encrypted=True,
            kms_key_id=dev.kms_key_arn,
            final_snapshot=True,
            tags=tags_for(self._tags, f"{name}-home", **{"devprod:home-of": dev.name}),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, protect=dev.protect_home),
        )

    def _box(
        self, profile: aws.iam.InstanceProfile, group: aws.ec2.SecurityGroup, home: aws.ebs.Volume
    ) -> aws.ec2.Instance:
        dev, name, args = self._args.developer, self._name, self._args
        ami = args.ami
        if ami is None:
            ami = aws.ssm.get_parameter_output(
                name=ami_parameter(dev.os, dev.instance_type), opts=pulumi.InvokeOutputOptions(parent=self)
            ).value
        instance = aws.ec2.Instance(
            f"{name}-box",
            ami=ami,
            instance_type=dev.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[group.id],
            iam_instance_profile=profile.name,
            # Constant, not derived from the access mode: flipping ssm<->ssh must
            # not replace the box (R3). SSM needs outbound reach and there is no
            # NAT gateway, so boxes in public subnets get a public address;
            # the security group still admits nothing in SSM mode.
            associate_public_ip_address=True,
            metadata_options=METADATA_OPTIONS,
            root_block_device=encrypted_root(dev.root_volume_gib, dev.kms_key_arn),
            user_data=apply_all(lambda vol: render_user_data(dev, vol), home.id),
            user_data_replace_on_change=False,
            # The idle stop is the box powering itself off; "stop" (EC2's default
            # for EBS-backed instances, set so that nothing can turn it into
            # "terminate") makes that a stop that keeps the root volume.
            instance_initiated_shutdown_behavior="stop",
            tags=tags_for(self._tags, f"{name}-box"),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami", "userData"]),
        )
        aws.ec2.VolumeAttachment(
            f"{name}-home-attachment",
            device_name=HOME_DEVICE,
            volume_id=home.id,
            instance_id=instance.id,
            # Detach cleanly: a forced detach of a mounted ext4 risks the data.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        return instance

    def _address(self, instance: aws.ec2.Instance) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """(what ssh connects to, the public IP): the instance id over SSM; a fixed Elastic IP for SSH."""
        if self._args.developer.access is not Access.SSH:
            return instance.id, instance.public_ip
        eip = aws.ec2.Eip(
            f"{self._name}-eip",
            domain="vpc",
            instance=instance.id,
            tags=tags_for(self._tags, f"{self._name}-eip"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return eip.public_ip, eip.public_ip

    def _box_setup(self, role: aws.iam.Role, instance: aws.ec2.Instance) -> None:
        """The box's SSM association of the stack's box-setup document: idle stop and SSH key,
        kept current by `pulumi up`.

        The idle decision is made on the box (scripts/host/devprod-idle-stop.py),
        which sees sessions, keep-awake markers and processes; a CloudWatch CPU
        alarm sees only CPU, stopping a developer who reads code in an open
        session and missing a long low-CPU job. The box stops by powering itself
        off (shutdown behaviour "stop"): no IAM permission, no alarm racing it.
        """
        dev, name, args = self._args.developer, self._name, self._args
        child = pulumi.ResourceOptions(parent=self)
        # Parameters change in place (UpdateAssociation); the instance is not touched.
        association = aws.ssm.Association(
            f"{name}-box-setup",
            association_name=f"{name}-box-setup",
            name=args.setup_document_name,
            targets=[{"key": "InstanceIds", "values": [instance.id]}],
            parameters=box_parameters(dev),
            schedule_expression=BOX_SETUP_SCHEDULE,
            apply_only_at_cron_interval=False,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-state-manager",
            role=role.id,
            policy=apply_all(
                lambda *ids: policy_document(state_manager_statements(args.region, *ids)),
                args.account_id, instance.id, args.setup_document_arn, association.association_id,
            ),
            opts=child,
        )

    def _access_policy(self, instance_id: pulumi.Output[str]) -> aws.iam.Policy:
        """S29: the managed policy a developer's IAM identity gets: their own box, nothing else."""
        dev, name, args = self._args.developer, self._name, self._args
        return aws.iam.Policy(
            f"{name}-access",
            description=f"devprod: sessions, SSH over SSM, start and stop on {dev.name}'s own box only",
            policy=apply_all(
                lambda account, instance: policy_document(developer_access_statements(args.region, account, instance, dev.name)),
                args.account_id, instance_id,
            ),
            tags=tags_for(self._tags, f"{name}-access", **{ACCESS_TAG: dev.name}),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _schedules(
        self,
        name: str,
        schedule: Schedule,
        instance_id: pulumi.Output[str],
        args: DeveloperInstanceArgs,
        tags: Mapping[str, str],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        actions = []
        if schedule.stop_at:
            actions.append("ec2:StopInstances")
        if schedule.start_at:
            actions.append("ec2:StartInstances")
        role = aws.iam.Role(
            f"{name}-scheduler-role",
            assume_role_policy=service_trust_policy("scheduler.amazonaws.com", args.account_id),
            description=f"EventBridge Scheduler: stop/start {name}'s box only",
            tags=tags_for(tags, f"{name}-scheduler-role"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=role.id,
            policy=apply_all(
                lambda account, instance: policy_document(
                    [{"Effect": "Allow", "Action": actions, "Resource": instance_arn(args.region, account, instance)}]
                ),
                args.account_id, instance_id,
            ),
            opts=child,
        )
        payload = apply_all(lambda i: json.dumps({"InstanceIds": [i]}), instance_id)
        for verb, at in (("stop", schedule.stop_at), ("start", schedule.start_at)):
            if not at:
                continue
            aws.scheduler.Schedule(
                f"{name}-{verb}",
                description=f"{verb.capitalize()} {name}'s box at {at} {schedule.timezone}",
                schedule_expression=cron_expression(at, schedule.days),
                schedule_expression_timezone=schedule.timezone,
                flexible_time_window={"mode": "OFF"},
                state="ENABLED",
                target={
                    "arn": f"arn:aws:scheduler:::aws-sdk:ec2:{verb}Instances",
                    "role_arn": role.arn,
                    "input": payload,
                    "retry_policy": {"maximum_retry_attempts": 3},
                },
                opts=child,
            )
