"""DeveloperInstance: one developer's EC2 box, its persistent home volume and auto-stop."""

from __future__ import annotations

import json
import math
import re
import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pulumi
import pulumi_aws as aws

from components.common import (
    METADATA_OPTIONS,
    egress_anywhere,
    encrypted_root,
    InstanceRoleSpec,
    instance_role,
    policy_document,
    script_with_settings,
    service_trust_policy,
    tags_for,
)
from components.config import Access, DeveloperSpec, OperatingSystem, Schedule
from devprod.contracts import DEVELOPER_ROLE, ROLE_TAG

USER_DATA_FILE = Path(__file__).resolve().parent.parent / "scripts" / "user-data" / "dev.sh"
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
        lines.append(
            "  ProxyCommand sh -c \"aws ssm start-session --target %h "
            f"--document-name AWS-StartSSHSession --parameters portNumber=%p --region {region}\""
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DeveloperInstanceArgs:
    developer: DeveloperSpec
    subnet_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    region: str
    account_id: pulumi.Input[str]
    host_alias: str
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

    def __init__(self, name: str, args: DeveloperInstanceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:compute:DeveloperInstance", name, None, opts)
        dev = args.developer
        self._name, self._args = name, args
        self._tags = {**args.tags, "devprod:developer": dev.name, ROLE_TAG: DEVELOPER_ROLE}

        # S21: the box's role holds the SSM agent's channels and nothing else:
        # no Parameter Store, no KMS, so sudo on a box reaches no secret.
        _, profile = instance_role(
            self,
            name,
            f"devprod box of {dev.name}: SSM agent only",
            self._tags,
            InstanceRoleSpec(region=args.region, account_id=args.account_id, managed_policies=args.managed_policies),
        )
        home = self._home_volume()
        instance = self._box(profile, self._security_group(), home)
        address, public_ip = self._address(instance)
        instance_arn = pulumi.Output.all(args.account_id, instance.id).apply(
            lambda a: f"arn:aws:ec2:{args.region}:{a[0]}:instance/{a[1]}"
        )
        if dev.schedule is not None:
            self._schedules(name, dev.schedule, instance.id, instance_arn, args, self._tags)
        if dev.idle_stop_minutes is not None:
            self._idle_stop(instance)

        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.public_ip = public_ip
        self.home_volume_id = home.id
        self.ssh_config = address.apply(
            lambda a: ssh_config_block(args.host_alias, dev.name, a, dev.access, args.region)
        )
        self.vscode = pulumi.Output.from_input(
            f"code --remote ssh-remote+{args.host_alias} /home/{dev.name}"
        )
        self.register_outputs(
            {
                "instanceId": self.instance_id,
                "privateIp": self.private_ip,
                "publicIp": self.public_ip,
                "homeVolumeId": self.home_volume_id,
                "sshConfig": self.ssh_config,
                "vscode": self.vscode,
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
            user_data=home.id.apply(lambda vol: render_user_data(dev, vol)),
            user_data_replace_on_change=False,
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

    def _idle_stop(self, instance: aws.ec2.Instance) -> None:
        dev, name, args = self._args.developer, self._name, self._args
        assert dev.idle_stop_minutes is not None
        aws.cloudwatch.MetricAlarm(
            f"{name}-idle-stop",
            alarm_description=f"Stops {dev.name}'s box after {dev.idle_stop_minutes} idle minutes",
            namespace="AWS/EC2",
            metric_name="CPUUtilization",
            dimensions={"InstanceId": instance.id},
            statistic="Average",
            period=300,
            evaluation_periods=math.ceil(dev.idle_stop_minutes / 5),
            threshold=dev.idle_cpu_percent,
            comparison_operator="LessThanThreshold",
            # A stopped box sends no data; that must not count as idle again.
            treat_missing_data="notBreaching",
            alarm_actions=[f"arn:aws:automate:{args.region}:ec2:stop"],
            tags=tags_for(self._tags, f"{name}-idle-stop"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _schedules(
        self,
        name: str,
        schedule: Schedule,
        instance_id: pulumi.Output[str],
        instance_arn: pulumi.Output[str],
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
            policy=instance_arn.apply(
                lambda arn: policy_document([{"Effect": "Allow", "Action": actions, "Resource": arn}])
            ),
            opts=child,
        )
        payload = instance_id.apply(lambda i: json.dumps({"InstanceIds": [i]}))
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
