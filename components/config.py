"""Typed, validated stack configuration: the only module that reads `pulumi.Config`.

`parse_stack_config` turns the raw key/value map of a `Pulumi.<stack>.yaml` into
frozen objects, or raises one `ConfigError` that lists every problem with its key
path, the bad value and what is allowed. The same function serves `pulumi up`
(through `load_from_pulumi`), the offline plan and `devprod onboard`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Annotated, Any, Literal, Mapping, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pulumi
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.aws_names import instance_type_problem, is_zone_name, region_problem
from components.cron import cron_problem
from components.sshkey import SshKeyError, SshPublicKey, parse_public_key

NAMESPACE = "devprod"
ALWAYS_ON = "always-on"

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
# Accounts that exist on the supported images, or that mean something to sshd,
# sudo, SSM or devprod itself (I2, S25). A developer named like one of them
# would share (or be refused) that account. Sources, gathered per image:
# - both: the default cloud user and the accounts the SSM agent and devprod
#   create (ec2-user/ubuntu, ssm-user, app, devprod), root and nobody;
# - AL2023: Fedora's `setup` package uid/gid table (bin, daemon, adm, lp,
#   sync, shutdown, halt, mail, operator, games, ftp) plus the sysusers.d
#   entries of the packages on the AMI (systemd-*, dbus, tss, rpc, rpcuser,
#   sshd, chrony, ec2-instance-connect, libstoragemgmt, polkitd, postfix,
#   unbound, sssd, rngd, setroubleshoot, dnsmasq, nfsnobody);
# - Ubuntu 24.04: Debian's base-passwd (daemon, bin, sys, sync, games, man,
#   lp, mail, news, uucp, proxy, www-data, backup, list, irc, gnats) plus the
#   cloud image's package accounts (systemd-*, messagebus, syslog, uuidd,
#   dhcpcd, usbmux, tss, sshd, pollinate, tcpdump, landscape, fwupd-refresh,
#   polkitd, lxd, dnsmasq). Underscore names (_apt, _chrony) cannot pass
#   NAME_PATTERN and need no entry.
RESERVED_NAMES = frozenset(
    {
        # every image, and accounts devprod or the SSM agent create
        "root", "nobody", "admin", "administrator", "ec2-user", "ssm-user", "ubuntu",
        "app", "devprod", "git", "docker", "wheel", "sudo", "snap",
        # Amazon Linux 2023
        "bin", "daemon", "adm", "lp", "sync", "shutdown", "halt", "mail", "operator",
        "games", "ftp", "dbus", "tss", "rpc", "rpcuser", "sshd", "chrony",
        "ec2-instance-connect", "libstoragemgmt", "polkitd", "postfix", "unbound",
        "sssd", "rngd", "setroubleshoot", "dnsmasq", "nfsnobody", "systemd-network",
        "systemd-oom", "systemd-resolve", "systemd-timesync", "systemd-coredump",
        "systemd-journal", "systemd-bus-proxy", "input", "kvm", "render", "utmp",
        "tape", "video", "audio", "cdrom", "dialout", "floppy", "disk", "kmem", "mem",
        "lock", "users", "clock", "sgx",
        # Ubuntu 24.04
        "sys", "man", "news", "uucp", "proxy", "www-data", "backup", "list", "irc",
        "gnats", "messagebus", "syslog", "uuidd", "dhcpcd", "usbmux", "pollinate",
        "tcpdump", "landscape", "fwupd-refresh", "lxd", "plugdev", "netdev", "staff",
        "src", "shadow", "voice", "fax", "crontab",
    }
)
KMS_KEY_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$")
HHMM_PATTERN = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# The widest range direct SSH may come from, per IP version (S25, I3).
SSH_WIDEST_PREFIX = {4: 16, 6: 48}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Physical-name limits of the services we name things in (I4). Pulumi appends
# "-" plus 7 random characters to auto-named resources.
AUTONAME_SUFFIX = 8
NAME_LIMITS = {"iam": 64, "s3": 63, "tag": 256, "scheduler": 64}


class ConfigError(pulumi.RunError):
    """Every problem found in a stack config, one line each (shown without traceback)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  - {p}" for p in problems))


class Access(str, Enum):
    SSM = "ssm"
    SSH = "ssh"


class OperatingSystem(str, Enum):
    AL2023 = "al2023"
    UBUNTU_2404 = "ubuntu-24.04"


# YAML already types every value, and Pulumi hands structured config on as
# JSON, which keeps those types. So a value of the wrong type is a mistake in
# the file, never something to coerce: "100" (quoted) is text, `yes` is text
# in YAML 1.2, 20.5 is not a size in GiB, and true is not 1. Every scalar in
# the models below uses one of these (tests/test_config.py audits the schema).
Int = StrictInt
Bool = StrictBool
Text = StrictStr
Number = Annotated[float, Strict()]  # a whole number is a number too: 5 for 5.0


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


def _check_instance_type(value: str | None) -> str | None:
    problem = None if value is None else instance_type_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _parse_cidrs(values: tuple[str, ...], widest: Mapping[int, int] | None = None) -> tuple[str, ...]:
    """Strict CIDRs (no host bits), normalised; none wider than `widest` per IP version when given (I3)."""
    out = []
    for raw in values:
        try:
            net = ipaddress.ip_network(raw, strict=True)
        except ValueError as exc:
            raise ValueError(f"{raw!r} is not a CIDR without host bits ({exc})") from None
        limit = (widest or {}).get(net.version, 0)
        if net.prefixlen < limit:
            raise ValueError(
                f"{raw!r} is wider than /{limit}; direct SSH must come from your own range (/{limit} or narrower)"
            )
        out.append(str(net))
    return tuple(out)


def _check_ssh_cidrs(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if values is None else _parse_cidrs(values, SSH_WIDEST_PREFIX)


LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)


# A process name as the kernel keeps it (/proc/PID/comm: at most 15 bytes),
# from a set that needs no quoting in the box's settings file or SSM parameter.
PROCESS_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]{1,15}$")
KEEPAWAKE_LIMIT = 20


def _check_processes(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    bad = [v for v in values if not PROCESS_NAME_PATTERN.match(v)]
    if bad:
        raise ValueError(f"{bad} are not process names as in /proc/PID/comm (1-15 of A-Z a-z 0-9 _ . + -)")
    if len(values) > KEEPAWAKE_LIMIT:
        raise ValueError(f"lists {len(values)} names; at most {KEEPAWAKE_LIMIT}")
    if len(set(values)) != len(values):
        raise ValueError(f"{list(values)} names a process twice")
    return values


def _check_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        raise ValueError(f"{value} is not a CloudWatch Logs retention; allowed: {LOG_RETENTION_DAYS}")
    return value


class Schedule(_Model):
    """Local times at which a box is stopped (and optionally started)."""

    stop_at: Text | None = "20:00"
    start_at: Text | None = None
    days: tuple[Text, ...] = ("mon", "tue", "wed", "thu", "fri")
    timezone: Text = "UTC"

    @field_validator("stop_at", "start_at")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not HHMM_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a 24-hour time HH:MM")
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in value if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"{bad} are not weekdays; allowed: {', '.join(WEEKDAYS)}")
        if not value:
            raise ValueError("needs at least one day")
        if len(set(value)) != len(value):
            raise ValueError(f"{list(value)} lists a day twice")
        return tuple(sorted(value, key=WEEKDAYS.index))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _stops_or_starts(self) -> "Schedule":
        if self.stop_at is None and self.start_at is None:
            raise ValueError(f"set stopAt and/or startAt, or use {ALWAYS_ON!r}")
        return self


# A schedule is a mapping (Schedule) or the word 'always-on'. The discriminator
# picks the branch by the value's shape, under tags of our own naming, so an
# error reports only that branch's problem, with a key path we control.
AS_SCHEDULE, AS_ALWAYS_ON = "as-schedule", "as-always-on"


def _schedule_shape(value: Any) -> str:
    return AS_ALWAYS_ON if isinstance(value, str) else AS_SCHEDULE


ScheduleSetting = Annotated[
    Union[Annotated[Schedule, Tag(AS_SCHEDULE)], Annotated[Literal["always-on"], Tag(AS_ALWAYS_ON)]],
    Discriminator(_schedule_shape),
]


class DevDefaults(_Model):
    instance_type: Text = "t3.large"
    os: OperatingSystem = OperatingSystem.AL2023
    access: Access = Access.SSM
    home_volume_gib: Int = Field(50, ge=8, le=16384, alias="homeVolumeGiB")
    root_volume_gib: Int = Field(30, ge=8, le=1024, alias="rootVolumeGiB")
    schedule: ScheduleSetting = Schedule()
    idle_stop_minutes: Int | None = Field(60, ge=10, le=1440)
    idle_cpu_percent: Number = Field(5.0, gt=0, lt=100)
    # Logged-in terminals are warned this long before an idle stop.
    idle_warn_minutes: Int = Field(10, ge=1, le=60)
    # Processes (by /proc/PID/comm name) whose presence keeps a box awake.
    keep_awake_processes: tuple[Text, ...] = ()
    allowed_ssh_cidrs: tuple[Text, ...] = ()
    kms_key_arn: Text | None = None
    protect_home: Bool = False

    _type = field_validator("instance_type")(_check_instance_type)
    _cidrs = field_validator("allowed_ssh_cidrs")(_check_ssh_cidrs)
    _processes = field_validator("keep_awake_processes")(_check_processes)

    @field_validator("kms_key_arn")
    @classmethod
    def _kms(cls, value: str | None) -> str | None:
        if value is not None and not KMS_KEY_ARN_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/UUID); "
                "aliases force a replacement on every update"
            )
        return value


class Tool(str, Enum):
    """What a box can be given, each from the distribution's own packages (scripts/host/devprod-box-tools.sh)."""

    DOCKER = "docker"
    GIT = "git"
    NODE = "node"
    PYTHON = "python"


# Dotfiles come from an https git URL without credentials, query or fragment:
# the value reaches the box as a document parameter and is handed to git.
DOTFILES_PATTERN = re.compile(r"^https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?/[A-Za-z0-9._~/-]{1,200}$")


def _check_tools(values: tuple[Tool, ...] | None) -> tuple[Tool, ...] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{[t.value for t in values]} names a tool twice")
    return values


def _check_dotfiles(value: str | None) -> str | None:
    if value is None:
        return None
    if not DOTFILES_PATTERN.match(value) or "/../" in value or value.endswith("/.."):
        raise ValueError(
            f"{value!r} is not an https git URL such as https://github.com/alice/dotfiles.git "
            "(no user:password@, query or fragment)"
        )
    return value


class DeveloperEntry(_Model):
    """One roster entry as written in the stack file; unset fields take devDefaults."""

    name: Text
    ssh_public_key: Text
    instance_type: Text | None = None
    os: OperatingSystem | None = None
    access: Access | None = None
    home_volume_gib: Int | None = Field(None, ge=8, le=16384, alias="homeVolumeGiB")
    root_volume_gib: Int | None = Field(None, ge=8, le=1024, alias="rootVolumeGiB")
    schedule: ScheduleSetting | None = None
    idle_stop_minutes: Int | None = Field(None, ge=10, le=1440)
    # Replaces devDefaults.keepAwakeProcesses for this developer ([] for none).
    keep_awake_processes: tuple[Text, ...] | None = None
    # Installed on the box with the distribution's packages.
    tools: tuple[Tool, ...] = ()
    # Cloned as the developer into ~/.dotfiles and installed once.
    dotfiles: Text | None = None
    allowed_ssh_cidrs: tuple[Text, ...] | None = None
    availability_zone: Text | None = None
    protect_home: Bool | None = None

    _type = field_validator("instance_type")(_check_instance_type)
    _cidrs = field_validator("allowed_ssh_cidrs")(_check_ssh_cidrs)
    _processes = field_validator("keep_awake_processes")(_check_processes)
    _tools = field_validator("tools")(_check_tools)
    _dotfiles = field_validator("dotfiles")(_check_dotfiles)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: 2-21 characters, lowercase letters, digits "
                "and '-', starting with a letter"
            )
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is a system account name; pick another")
        return value


class Runtime(str, Enum):
    NODE20 = "node20"
    PYTHON312 = "python3.12"


# What the Test stage runs, after the tests, in a clean copy of the source to
# build the release tree: the host then installs nothing (no package manager,
# no dependency lifecycle scripts on production). Python packages go to
# vendor/ (a venv is not relocatable); the app puts vendor/ on its path.
DEFAULT_PACKAGE_COMMANDS = {
    Runtime.NODE20: ("npm ci --omit=dev",),
    Runtime.PYTHON312: ("python3.12 -m pip install --no-compile --target vendor -r requirements.txt",),
}
# Commands end up in a systemd unit and the deploy document's settings: one
# printable line, no characters that could end a quoted string or a heredoc.
COMMAND_PATTERN = re.compile(r"^[A-Za-z0-9 _./:=@%+,&|<>-]{1,200}$")
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/-]{0,100}$")
AMI_PATTERN = re.compile(r"^ami-[0-9a-f]{8,17}$")
# A DNS hostname for the load balancer (no wildcard, no trailing dot): at least two labels.
DOMAIN_PATTERN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
HOSTED_ZONE_PATTERN = re.compile(r"^Z[A-Z0-9]{1,32}$")
CERTIFICATE_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):[0-9]{12}:certificate/[0-9a-f-]{36}$"
)
MAX_PRODUCTION_HOSTS = 10


class ProductionSettings(_Model):
    """The production host (`devprod:production`)."""

    instance_type: Text = "t3.small"
    runtime: Runtime = Runtime.NODE20
    start_command: Text
    install_command: Text | None = None
    port: Int = Field(8000, ge=1024, le=65535)
    health_path: Text = "/health"
    allowed_cidrs: tuple[Text, ...] = ("0.0.0.0/0",)
    keep_releases: Int = Field(5, ge=2, le=50)
    health_timeout_seconds: Int = Field(60, ge=5, le=600)
    ami: Text | None = None
    root_volume_gib: Int = Field(20, ge=8, le=1024, alias="rootVolumeGiB")
    log_retention_days: Int = 30
    availability_zone: Text | None = None
    # The app reaches the instance metadata service (and so the host role's
    # credentials) only when this says so; by default only root does (S23).
    app_uses_instance_role: Bool = False
    # nginx in front of the app: requests larger than this are refused (413).
    max_body_megabytes: Int = Field(10, ge=1, le=1024)
    # How long nginx waits for the app to read a request or answer one.
    proxy_timeout_seconds: Int = Field(60, ge=1, le=3600)
    # How long the old slot may finish its requests after a switch before it is stopped.
    drain_timeout_seconds: Int = Field(30, ge=1, le=600)
    # The loopback ports of the two app slots (blue, green); nginx alone listens on `port`.
    slot_ports: tuple[Int, Int] = (8001, 8002)
    # Issue #15: production survives a lost host. More than one host needs
    # `domain`: the HTTPS load balancer in front of them.
    hosts: Int = Field(1, ge=1, le=MAX_PRODUCTION_HOSTS)
    # The load balancer's name (HTTPS); its certificate is `certificateArn`,
    # or one ACM issues after DNS validation in `hostedZoneId`.
    domain: Text | None = None
    hosted_zone_id: Text | None = None
    certificate_arn: Text | None = None

    _type = field_validator("instance_type")(_check_instance_type)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not DOMAIN_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a lowercase DNS hostname such as app.example.com")
        return value

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone_id(cls, value: str | None) -> str | None:
        if value is not None and not HOSTED_ZONE_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ")
        return value

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None and not CERTIFICATE_ARN_PATTERN.match(value):
            raise ValueError(f"{value!r} is not an ACM certificate ARN")
        return value

    @field_validator("start_command", "install_command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not COMMAND_PATTERN.match(value):
            raise ValueError(
                f"{value!r} must be one line of up to 200 characters from [A-Za-z0-9 _./:=@%+,&|<>-] "
                "(no quotes, $, ; or backslashes)"
            )
        return value

    @field_validator("health_path")
    @classmethod
    def _health(cls, value: str) -> str:
        if not HEALTH_PATH_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a URL path such as /health")
        return value

    @field_validator("allowed_cidrs")
    @classmethod
    def _app_cidrs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise ValueError("needs at least one CIDR that may reach the app port")
        return _parse_cidrs(values)

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str | None) -> str | None:
        if value is not None and not AMI_PATTERN.match(value):
            raise ValueError(f"{value!r} is not an AMI id such as ami-0123456789abcdef0")
        return value

    _retention = field_validator("log_retention_days")(_check_retention)

    @model_validator(mode="after")
    def _port(self) -> "ProductionSettings":
        if self.port in (22, 3389):
            raise ValueError(f"port {self.port} is an admin port; production is administered through SSM only")
        blue, green = self.slot_ports
        if blue == green or self.port in self.slot_ports or not all(1024 <= p <= 65535 for p in self.slot_ports):
            raise ValueError(
                f"slotPorts {list(self.slot_ports)} must be two different ports from 1024 to 65535, "
                f"neither of them port {self.port} (where nginx listens)"
            )
        return self

    @model_validator(mode="after")
    def _https(self) -> "ProductionSettings":
        if self.domain and not (self.hosted_zone_id or self.certificate_arn):
            raise ValueError(f"domain {self.domain!r} needs hostedZoneId or certificateArn (the HTTPS certificate)")
        if (self.hosted_zone_id or self.certificate_arn) and not self.domain:
            raise ValueError("hostedZoneId and certificateArn need domain (the load balancer's name)")
        if self.hosts > 1 and not self.domain:
            raise ValueError(f"hosts {self.hosts} needs domain (the HTTPS load balancer in front of the hosts)")
        return self

    @property
    def load_balanced(self) -> bool:
        return self.domain is not None

    @property
    def certificate_region(self) -> str | None:
        match = CERTIFICATE_ARN_PATTERN.match(self.certificate_arn or "")
        return match.group("region") if match else None

    @property
    def install(self) -> str:
        """The host's install step: none by default (the Test stage builds the release tree)."""
        return self.install_command or ""


REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9._/-]{1,100}$")
PIPELINE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9.@_-]{1,100}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
OIDC_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\.actions\.githubusercontent\.com$"
)
# A GitHub environment name as it appears in an OIDC subject: no wildcards, no
# ':' (the subject's separator), nothing a trust could read as a pattern.
GITHUB_ENVIRONMENT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
S3_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_oidc_arn(value: str | None) -> str | None:
    if value is not None and not OIDC_ARN_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not the ARN of an account's token.actions.githubusercontent.com OIDC provider"
        )
    return value


def _check_repository(value: str) -> str:
    if not REPOSITORY_PATTERN.match(value):
        raise ValueError(f"{value!r} is not OWNER/REPO")
    return value


# A CloudWatch alarm name (the API allows 255 characters; no control characters).
ALARM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9 ._:/#+=@(),-]{1,255}$")
# CodePipeline waits at most this long on a stage condition's alarm rule.
MAX_BAKE_MINUTES = 60


class DeployWindow(_Model):
    """When the pipeline may enter Release (CodePipeline's DeploymentWindow rule)."""

    cron: Text
    time_zone: Text = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)  # CodePipeline's DeploymentWindow fields (components/cron.py)
        if problem:
            raise ValueError(f"{value!r} is not a deployment window: {problem}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None
        return value


class PipelineSettings(_Model):
    """The deploy pipeline (`devprod:pipeline`): push to `branch` of `repository` reaches production."""

    name: Text
    repository: Text
    branch: Text = "main"
    test_commands: tuple[Text, ...] = ()
    notify_emails: tuple[Text, ...] = ()
    oidc_provider_arn: Text | None = None
    required_check: Text = "test"
    build_image: Text = "aws/codebuild/amazonlinux-x86_64-standard:5.0"
    build_timeout_minutes: Int = Field(30, ge=5, le=480)
    manage_repository: Bool = True
    # Build the release tree after the tests (default by runtime, see DEFAULT_PACKAGE_COMMANDS).
    package_commands: tuple[Text, ...] | None = None
    # The app repository's GitHub environment the deploy job runs in; the
    # deploy role trusts only this environment's OIDC subject (S27).
    deploy_environment: Text = "production"
    # Production hosts deployed at once by the Release action; the rest wait (rolling).
    batch: Int = Field(1, ge=1, le=10)
    # After Release, the pipeline watches the alarms this long; one in ALARM rolls Release back.
    bake_minutes: Int = Field(10, ge=0, le=MAX_BAKE_MINUTES)
    # More alarms to watch while baking, besides the service's own (by name, in this region).
    bake_alarms: tuple[Text, ...] = ()
    # When set, Release is entered only inside this window (recurring freezes outside it).
    deploy_window: DeployWindow | None = None

    @field_validator("bake_alarms")
    @classmethod
    def _alarms(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not ALARM_NAME_PATTERN.match(v)]
        if bad:
            raise ValueError(f"{bad} are not CloudWatch alarm names")
        if len(set(values)) != len(values):
            raise ValueError(f"{list(values)} names an alarm twice")
        own = [v for v in values if v.startswith("devprod-")]
        if own:
            raise ValueError(f"{own}: devprod-* alarms are the service's own, already watched")
        return values

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PIPELINE_NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a CodePipeline name ([A-Za-z0-9.@_-], up to 100)")
        return value

    _repo = field_validator("repository")(_check_repository)
    _oidc = field_validator("oidc_provider_arn")(_check_oidc_arn)

    @field_validator("deploy_environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if not GITHUB_ENVIRONMENT_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a GitHub environment name ([A-Za-z0-9_.-], no wildcards)")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not BRANCH_PATTERN.match(value) or "*" in value or ".." in value:
            raise ValueError(f"{value!r} is not a plain branch name (no wildcards)")
        return value

    @field_validator("test_commands", "package_commands")
    @classmethod
    def _tests(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for value in values or ():
            if not COMMAND_PATTERN.match(value):
                raise ValueError(
                    f"{value!r} must be one line of up to 200 characters from [A-Za-z0-9 _./:=@%+,&|<>-]"
                )
        return values

    @field_validator("notify_emails")
    @classmethod
    def _emails(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not EMAIL_PATTERN.match(v)]
        if bad:
            raise ValueError(f"{bad} are not e-mail addresses")
        return values

    def package_commands_for(self, runtime: Runtime) -> tuple[str, ...]:
        return self.package_commands if self.package_commands is not None else DEFAULT_PACKAGE_COMMANDS[runtime]

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def repo_name(self) -> str:
        return self.repository.split("/", 1)[1]


# The stacks this repository's CI runs `pulumi up` for, and the GitHub
# environment each one's up job runs in (S27). Pull-request previews read only
# PREVIEW_STACK (see CiSettings); every stack has its own secrets key.
CI_UP_ENVIRONMENTS = {"dev": "dev", "prod": "production"}
CI_STACK = "prod"


class CiSettings(_Model):
    """This infrastructure repository's CI identities (`devprod:ci`), held by the prod stack.

    The state lives in a Pulumi DIY backend on S3 (`devprod bootstrap`), each
    stack's secrets under its own KMS key: one shared key would let the dev
    up role decrypt prod's secrets.
    """

    repository: Text
    state_bucket: Text
    secrets_keys: dict[Text, Text]
    oidc_provider_arn: Text | None = None

    _repo = field_validator("repository")(_check_repository)
    _oidc = field_validator("oidc_provider_arn")(_check_oidc_arn)

    @field_validator("state_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not S3_BUCKET_PATTERN.match(value) or ".." in value:
            raise ValueError(f"{value!r} is not an S3 bucket name (the Pulumi state bucket, without s3://)")
        return value

    @field_validator("secrets_keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [stack for stack in CI_UP_ENVIRONMENTS if stack not in value]
        unknown = sorted(set(value) - set(CI_UP_ENVIRONMENTS))
        if missing or unknown:
            raise ValueError(
                f"needs exactly one key ARN per stack {list(CI_UP_ENVIRONMENTS)} "
                f"(missing {missing}, unknown {unknown})"
            )
        bad = {stack: arn for stack, arn in value.items() if not KMS_KEY_ARN_PATTERN.match(arn)}
        if bad:
            raise ValueError(f"{bad} are not KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/UUID)")
        if len(set(value.values())) != len(value):
            raise ValueError("two stacks share a secrets key; the dev up role could then decrypt prod's secrets")
        return value


class FlowLogTraffic(str, Enum):
    REJECT = "REJECT"
    ACCEPT = "ACCEPT"
    ALL = "ALL"


class FlowLogSettings(_Model):
    """VPC flow logs of a VPC devprod creates (S25): rejected traffic by default."""

    traffic: FlowLogTraffic = FlowLogTraffic.REJECT
    retention_days: Int = 30

    _retention = field_validator("retention_days")(_check_retention)


class NetworkSettings(_Model):
    """A new VPC (cidr + zones) or an existing one (vpcId + subnets by zone)."""

    cidr: Text = "10.40.0.0/16"
    availability_zones: tuple[Text, ...] | None = None
    vpc_id: Text | None = None
    subnets: dict[Text, Text] | None = None
    flow_logs: FlowLogSettings = FlowLogSettings()

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 CIDR without host bits ({exc})") from None
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"{value!r}: VPC prefix must be /16 to /24")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        bad = [z for z in value if not is_zone_name(z)]
        if bad:
            raise ValueError(f"{bad} are not availability zone names such as eu-central-1a")
        if not 1 <= len(value) <= 4 or len(set(value)) != len(value):
            raise ValueError(f"{list(value)}: give 1 to 4 distinct zones")
        return value

    @model_validator(mode="after")
    def _existing(self) -> "NetworkSettings":
        if (self.vpc_id is None) != (self.subnets is None):
            raise ValueError("an existing network needs both vpcId and subnets (zone: subnet-id)")
        if self.vpc_id is not None and not re.match(r"^vpc-[0-9a-f]{8,17}$", self.vpc_id):
            raise ValueError(f"vpcId {self.vpc_id!r} is not a VPC id such as vpc-0abc1234")
        for zone, subnet in (self.subnets or {}).items():
            if not is_zone_name(zone) or not re.match(r"^subnet-[0-9a-f]{8,17}$", subnet):
                raise ValueError(f"subnets entry {zone!r}: {subnet!r} is not 'zone: subnet-id'")
        return self


@dataclass(frozen=True)
class NetworkSpec:
    """Where boxes live. `zones` is ordered; the first is the default zone."""

    zones: tuple[str, ...]
    cidr: str
    vpc_id: str | None = None
    subnet_ids: Mapping[str, str] = field(default_factory=dict)
    flow_logs: FlowLogSettings = FlowLogSettings()

    @property
    def existing(self) -> bool:
        return self.vpc_id is not None


@dataclass(frozen=True)
class DeveloperSpec:
    """One developer with every default applied: what DeveloperInstance builds from."""

    name: str
    ssh_key: SshPublicKey
    instance_type: str
    os: OperatingSystem
    access: Access
    home_volume_gib: int
    root_volume_gib: int
    schedule: Schedule | None  # None: always on
    idle_stop_minutes: int | None
    idle_cpu_percent: float
    idle_warn_minutes: int
    keep_awake_processes: tuple[str, ...]
    allowed_ssh_cidrs: tuple[str, ...]
    availability_zone: str
    kms_key_arn: str | None
    protect_home: bool
    tools: tuple[Tool, ...] = ()
    dotfiles: str | None = None


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    region: str
    network: NetworkSpec
    developers: tuple[DeveloperSpec, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    production: ProductionSettings | None = None
    production_zone: str = ""
    # The zone of each production host, host 1 first (host 1 is in production_zone).
    production_zones: tuple[str, ...] = ()
    pipeline: PipelineSettings | None = None
    # `pulumi up` refuses to run against any other account (None: no check).
    account_id: str | None = None
    # Managed policies the stack config allows (and attaches) on instance roles (S20).
    instance_role_policies: tuple[str, ...] = ()
    # This repository's CI roles (only in the prod stack).
    ci: CiSettings | None = None


# --------------------------------------------------------------------------- errors


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in (AS_SCHEDULE, AS_ALWAYS_ON):
            continue  # our union's branch tags say nothing to a user
        else:
            out += f".{part}" if out else str(part)
    return out


# pydantic's error types (a stable, documented API) for a value of the wrong
# type: what the key wants, in YAML's words, and which values would do.
WANTED_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "int_type": ("a whole number", (int,)),
    "bool_type": ("true or false", (bool,)),
    "string_type": ("text", (str,)),
    "float_type": ("a number", (int, float)),
    "tuple_type": ("a list", (list,)),
    "dict_type": ("a mapping", (dict,)),
    "model_type": ("a mapping", (dict,)),
}


def _shown(value: Any) -> str:
    """A value as the YAML that produced it would spell it (true, null), else repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return "null" if value is None else repr(value)


def _yaml_kind(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int, "a whole number"), (float, "a decimal number"), (str, "text"),
             (bytes, "binary data"), (list, "a list"), (dict, "a mapping"), (date, "a date"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _fits(value: Any, accepted: tuple[type, ...]) -> bool:
    return isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool))


def _wrong_type(err: Mapping[str, Any]) -> str:
    """'100' is text, not a whole number (remove the quotes)."""
    value = err["input"]
    wanted, accepted = WANTED_TYPES[err["type"]]
    if value is None:
        return f"null is not {wanted}; give a value or remove the key"
    message = f"{_shown(value)} is {_yaml_kind(value)}, not {wanted}"
    if isinstance(value, str) and not isinstance(_decode(value), str) and _fits(_decode(value), accepted):
        message += " (remove the quotes)"
    return message


def _problem_message(err: Mapping[str, Any]) -> str:
    """One pydantic error as the text after `key: `, without pydantic's wording where it misleads."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (typo?)"
    if kind == "missing":
        return "is required"
    if kind == "literal_error" and AS_ALWAYS_ON in err["loc"]:
        return f"{_shown(err.get('input'))} is not a schedule; give a mapping or {ALWAYS_ON!r}"
    if kind in ("model_type", "dict_type") and err["loc"][-1:] == (AS_SCHEDULE,):
        return f"{_shown(err['input'])} is not a schedule; give a mapping or {ALWAYS_ON!r}"
    if kind in WANTED_TYPES and "input" in err:
        return _wrong_type(err)
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and kind != "value_error":
        msg = f"{msg} (got {_shown(err['input'])})"
    return msg


def _pydantic_problems(prefix: str, exc: ValidationError, who: str = "") -> list[str]:
    problems = []
    seen = set()
    for err in exc.errors(include_url=False):
        loc = _path(tuple(err["loc"]))
        key = f"{prefix}.{loc}" if loc else prefix
        line = f"{key}{who}: {_problem_message(err)}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON text; files give objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# --------------------------------------------------------------------------- parsing

KNOWN_KEYS = {
    "devDefaults", "developers", "network", "tags", "production", "pipeline",
    "accountId", "instanceRoleManagedPolicies", "ci",
}
ACCOUNT_ID_PATTERN = re.compile(r"^[0-9]{12}$")
MANAGED_POLICY_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:iam::(aws|[0-9]{12}):policy/[A-Za-z0-9+=,.@_/-]{1,512}$")
# Grants Parameter Store reads on every parameter of the account (S20): never
# on an instance role, whatever the config says.
REFUSED_MANAGED_POLICIES = ("AmazonSSMManagedInstanceCore", "AmazonSSMFullAccess", "AdministratorAccess",
                            "PowerUserAccess", "AmazonSSMReadOnlyAccess", "AmazonEC2RoleforSSM")
FOREIGN_NAMESPACES = ("aws", "github", "pulumi")


def _zone_letter_default(region: str) -> tuple[str, ...]:
    # Fixed zone names, not a get_availability_zones lookup: an answer that can
    # change on its own must never feed subnet or volume placement (R3).
    return (f"{region}a", f"{region}b")


class _Refused(Exception):
    """One roster entry refused: the key it is about, and why (the message)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _claim_name(name: str, index: int, seen: dict[str, int]) -> None:
    folded = name.lower()
    if folded in seen:
        raise _Refused("name", f"duplicate of developers[{seen[folded]}]; names must be unique")
    seen[folded] = index


def _developer_key(entry: DeveloperEntry) -> SshPublicKey:
    try:
        return parse_public_key(entry.ssh_public_key)
    except SshKeyError as exc:
        raise _Refused("sshPublicKey", str(exc)) from None


def _developer_cidrs(entry: DeveloperEntry, access: Access, defaults: DevDefaults) -> tuple[str, ...]:
    """The ranges direct SSH may come from: none unless access is ssh, then at least one."""
    cidrs = _or_default(entry.allowed_ssh_cidrs, defaults.allowed_ssh_cidrs)
    if access is Access.SSH and not cidrs:
        raise _Refused(
            "allowedSshCidrs",
            "access 'ssh' needs this developer's own CIDRs (or use the default access 'ssm', which needs no open port)",
        )
    return tuple(cidrs) if access is Access.SSH else ()


def _developer_zone(entry: DeveloperEntry, network: NetworkSpec | None) -> str:
    zone = entry.availability_zone
    if network is None:
        return zone or ""
    if zone is None:
        return network.zones[0]
    if zone not in network.zones:
        raise _Refused("availabilityZone", f"{zone!r} is not one of the network's zones {list(network.zones)}")
    return zone


def _developer_spec(entry: DeveloperEntry, defaults: DevDefaults, network: NetworkSpec | None) -> DeveloperSpec:
    """One roster entry with every default applied, or _Refused naming the first bad key."""
    key = _developer_key(entry)
    access = _or_default(entry.access, defaults.access)
    cidrs = _developer_cidrs(entry, access, defaults)
    zone = _developer_zone(entry, network)
    schedule = _or_default(entry.schedule, defaults.schedule)
    always_on = schedule == ALWAYS_ON  # always-on opts out of every automatic stop
    idle = None if always_on else _or_default(entry.idle_stop_minutes, defaults.idle_stop_minutes)
    if entry.idle_stop_minutes is not None and idle is not None and idle <= defaults.idle_warn_minutes:
        raise _Refused("idleStopMinutes", f"{idle} must be more than devDefaults.idleWarnMinutes "
                                          f"({defaults.idle_warn_minutes}): the warning comes before the stop")
    return DeveloperSpec(
        name=entry.name,
        ssh_key=key,
        instance_type=_or_default(entry.instance_type, defaults.instance_type),
        os=_or_default(entry.os, defaults.os),
        access=access,
        home_volume_gib=_or_default(entry.home_volume_gib, defaults.home_volume_gib),
        root_volume_gib=_or_default(entry.root_volume_gib, defaults.root_volume_gib),
        schedule=None if always_on else schedule,
        idle_stop_minutes=idle,
        idle_cpu_percent=defaults.idle_cpu_percent,
        idle_warn_minutes=defaults.idle_warn_minutes,
        keep_awake_processes=_or_default(entry.keep_awake_processes, defaults.keep_awake_processes),
        tools=entry.tools,
        dotfiles=entry.dotfiles,
        allowed_ssh_cidrs=cidrs,
        availability_zone=zone,
        kms_key_arn=defaults.kms_key_arn,
        protect_home=_or_default(entry.protect_home, defaults.protect_home),
    )


def _parse_developer(
    index: int, item: Any, defaults: DevDefaults, network: NetworkSpec | None, seen: dict[str, int],
    problems: list[str],
) -> DeveloperSpec | None:
    """One roster entry; its first problem goes to `problems` under developers[i].key (name)."""
    where = f"developers[{index}]"
    label = f" ({item['name']})" if isinstance(item, dict) and isinstance(item.get("name"), str) else ""
    try:
        entry = DeveloperEntry.model_validate(item)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(where, exc, label))
        return None
    try:
        _claim_name(entry.name, index, seen)
        return _developer_spec(entry, defaults, network)
    except _Refused as refused:
        problems.append(f"{where}.{refused.key}{label}: {refused}")
        return None


def _parse_defaults(raw: Any, problems: list[str]) -> DevDefaults:
    """devDefaults, or the built-in defaults when absent (or wrong: its problems are listed)."""
    try:
        defaults = DevDefaults.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems("devDefaults", exc))
        return DevDefaults()
    stop, warn = defaults.idle_stop_minutes, defaults.idle_warn_minutes
    if stop is not None and warn >= stop:
        problems.append(f"devDefaults.idleWarnMinutes: {warn} must be less than devDefaults.idleStopMinutes "
                        f"({stop}): the warning comes before the stop")
    return defaults


def _parse_developers(
    raw: Any, defaults: DevDefaults, network: NetworkSpec | None, problems: list[str]
) -> list[DeveloperSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"developers: {_shown(raw)} is {_yaml_kind(raw)}, not a list of entries")
        return []
    seen: dict[str, int] = {}
    specs = [_parse_developer(index, item, defaults, network, seen, problems) for index, item in enumerate(raw)]
    return [spec for spec in specs if spec is not None]


def _parse_network(raw: Any, region: str | None, problems: list[str]) -> NetworkSpec | None:
    """The network, its zones checked against the region (skipped when the region itself is wrong)."""
    try:
        settings = NetworkSettings.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems("network", exc))
        return None
    if region is None:
        return None
    if settings.vpc_id is not None:
        zones, where = tuple(settings.subnets or {}), "network.subnets"
    else:
        zones, where = settings.availability_zones or _zone_letter_default(region), "network.availabilityZones"
    wrong = [z for z in zones if z[:-1] != region]
    if wrong:
        problems.append(f"{where}: {wrong} are not zones of region {region!r} (aws:region)")
        return None
    if settings.vpc_id is not None:
        return NetworkSpec(zones=zones, cidr="", vpc_id=settings.vpc_id, subnet_ids=dict(settings.subnets or {}),
                           flow_logs=settings.flow_logs)
    return NetworkSpec(zones=zones, cidr=settings.cidr, flow_logs=settings.flow_logs)


def _parse_tags(raw: Any, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"tags: {_shown(raw)} is {_yaml_kind(raw)}, not a mapping of tag key to value")
        return {}
    tags = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            bad = value if isinstance(key, str) else key
            problems.append(f"tags.{key}: {_shown(bad)} is {_yaml_kind(bad)}; tag keys and values are text")
        elif len(key) > 128 or len(value) > NAME_LIMITS["tag"]:
            problems.append(f"tags.{key}: {value[:40]!r}: keys up to 128 and values up to 256 characters")
        elif key.lower().startswith("aws:"):
            problems.append(f"tags.{key}: the aws: prefix is reserved by AWS")
        else:
            tags[key] = value
    return tags


def _parse_account(raw: Any, problems: list[str]) -> str | None:
    if raw is None:
        return None
    # Pulumi hands top-level values on as text, which _decode turns into a
    # number when it looks like one: both spellings arrive here.
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(value, str) or not ACCOUNT_ID_PATTERN.match(value):
        problems.append(f"accountId: {_shown(value)} is not a 12-digit AWS account id (quote it in YAML)")
        return None
    return value


def _parse_managed_policies(raw: Any, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"instanceRoleManagedPolicies: must be a list of IAM policy ARNs (got {raw!r})")
        return ()
    out = []
    for index, arn in enumerate(raw):
        where = f"instanceRoleManagedPolicies[{index}]"
        if not isinstance(arn, str) or not MANAGED_POLICY_ARN_PATTERN.match(arn):
            problems.append(f"{where}: {arn!r} is not an IAM policy ARN such as arn:aws:iam::aws:policy/NAME")
        elif arn.rsplit("/", 1)[1] in REFUSED_MANAGED_POLICIES:
            problems.append(
                f"{where}: {arn!r} grants far more than a host needs (every Parameter Store secret of the "
                "account, or more); devprod writes the SSM agent's policy itself"
            )
        elif arn in out:
            problems.append(f"{where}: {arn!r} is listed twice")
        else:
            out.append(arn)
    return tuple(out)


def _parse_ci(raw: Any, stack: str, pipeline: PipelineSettings | None, problems: list[str]) -> CiSettings | None:
    if raw is None:
        return None
    try:
        ci = CiSettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems("ci", exc))
        return None
    found = len(problems)
    if stack != CI_STACK:
        problems.append(
            f"ci: belongs in the {CI_STACK} stack, not {stack!r} (a role that can change the CI roles must "
            "itself need production approval)"
        )
    if pipeline is not None and ci.repository == pipeline.repository:
        problems.append(
            f"ci.repository: {ci.repository!r} is the app repository; the infrastructure repository must be "
            "another one (both trust a production environment)"
        )
    provider = pipeline.oidc_provider_arn if pipeline is not None else None
    if ci.oidc_provider_arn and provider and ci.oidc_provider_arn != provider:
        problems.append(
            f"ci.oidcProviderArn: {ci.oidc_provider_arn!r} differs from pipeline.oidcProviderArn {provider!r}; "
            "an account has one GitHub OIDC provider"
        )
    return ci if len(problems) == found else None


def _one_github_provider(
    ci: CiSettings | None, pipeline: PipelineSettings | None
) -> tuple[CiSettings | None, PipelineSettings | None]:
    """An account has one GitHub OIDC provider: naming it under ci or pipeline names it for both."""
    if ci is None or pipeline is None:
        return ci, pipeline
    arn = ci.oidc_provider_arn or pipeline.oidc_provider_arn
    return ci.model_copy(update={"oidc_provider_arn": arn}), pipeline.model_copy(update={"oidc_provider_arn": arn})


def check_name_limits(project: str, stack: str, developers: list[DeveloperSpec], problems: list[str]) -> None:
    """I4: the longest physical name we derive must fit the service's limit."""
    for dev in developers:
        longest_logical = f"{dev.name}-scheduler-role"  # the longest IAM name a box derives
        if len(longest_logical) + AUTONAME_SUFFIX > NAME_LIMITS["iam"]:
            problems.append(f"developers ({dev.name}): derived IAM name {longest_logical!r} is too long")
        tag = f"{project}-{stack}-{dev.name}"
        if len(tag) > NAME_LIMITS["tag"]:
            problems.append(f"developers ({dev.name}): derived tag {tag!r} is over 256 characters")


def _own_keys(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """devprod's keys without their namespace, decoded; other providers' keys are theirs."""
    values: dict[str, Any] = {}
    for full_key, value in raw.items():
        namespace, _, key = full_key.partition(":")
        if not key:
            namespace, key = NAMESPACE, namespace
        if namespace in FOREIGN_NAMESPACES:
            continue
        if namespace != NAMESPACE or key not in KNOWN_KEYS:
            problems.append(
                f"{full_key}: unknown config key (typo?); allowed: "
                + ", ".join(f"{NAMESPACE}:{k}" for k in sorted(KNOWN_KEYS))
            )
            continue
        values[key] = _decode(value)
    return values


def _parse_region(region: Any, problems: list[str]) -> str | None:
    if region is None:
        problems.append("aws:region: is required (e.g. `pulumi config set aws:region eu-central-1`)")
        return None
    if not isinstance(region, str):
        problems.append(f"aws:region: {_shown(region)} is {_yaml_kind(region)}, not a region name such as eu-central-1")
        return None
    problem = region_problem(region)
    if problem:
        problems.append(f"aws:region: {problem}")
        return None
    return region


def _parse_production(
    raw: Any, network: NetworkSpec | None, region: str | None, problems: list[str]
) -> tuple[ProductionSettings | None, tuple[str, ...]]:
    """The settings and each host's zone: round-robin over the network's zones from host 1's zone."""
    if raw is None:
        return None, ()
    try:
        production = ProductionSettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems("production", exc))
        return None, ()
    cert_region = production.certificate_region
    if region and cert_region and cert_region != region:
        problems.append(
            f"production.certificateArn: {production.certificate_arn!r} is in {cert_region}, "
            f"not the stack's region {region!r} (a load balancer uses a certificate of its own region)"
        )
    if network is None:
        return production, ()
    zone = production.availability_zone or network.zones[0]
    if zone not in network.zones:
        problems.append(
            f"production.availabilityZone: {zone!r} is not one of the network's zones {list(network.zones)}"
        )
        return production, ()
    if production.load_balanced and len(network.zones) < 2:
        problems.append(
            f"devprod:network.availabilityZones: {list(network.zones)} has one zone; the load balancer "
            "for production.domain needs at least two"
        )
    first = network.zones.index(zone)
    zones = tuple(network.zones[(first + i) % len(network.zones)] for i in range(production.hosts))
    return production, zones


def _parse_pipeline(values: Mapping[str, Any], owner: Any, problems: list[str]) -> PipelineSettings | None:
    if values.get("pipeline") is None:
        return None
    pipeline = None
    try:
        pipeline = PipelineSettings.model_validate(values["pipeline"])
    except ValidationError as exc:
        problems.extend(_pydantic_problems("pipeline", exc))
    if values.get("production") is None:
        problems.append("pipeline: needs devprod:production in the same stack (it deploys there)")
    if pipeline is not None and pipeline.manage_repository and owner != pipeline.owner:
        problems.append(
            f"github:owner: {owner!r} must be the owner of pipeline.repository {pipeline.repository!r} "
            "(the GitHub provider writes variables, branch protection and the workflow there)"
        )
    return pipeline


def parse_stack_config(raw: Mapping[str, Any], *, project: str, stack: str) -> StackConfig:
    """Validate a whole stack config (keys like 'devprod:developers') or raise ConfigError."""
    problems: list[str] = []
    values = _own_keys(raw, problems)
    region = _parse_region(raw.get("aws:region"), problems)

    defaults = _parse_defaults(values.get("devDefaults"), problems)
    network = _parse_network(values.get("network"), region, problems)
    developers = _parse_developers(values.get("developers"), defaults, network, problems)
    tags = _parse_tags(values.get("tags"), problems)
    production, production_zones = _parse_production(values.get("production"), network, region, problems)
    pipeline = _parse_pipeline(values, raw.get("github:owner"), problems)
    check_name_limits(project, stack, developers, problems)
    if values.get("pipeline") is not None and len(f"devprod-{stack}-release") > NAME_LIMITS["iam"]:
        problems.append(f"pipeline: stack name {stack!r} is too long for the Release role's IAM name (64 characters)")
    account_id = _parse_account(values.get("accountId"), problems)
    instance_role_policies = _parse_managed_policies(values.get("instanceRoleManagedPolicies"), problems)
    ci = _parse_ci(values.get("ci"), stack, pipeline, problems)
    ci, pipeline = _one_github_provider(ci, pipeline)

    if problems:
        raise ConfigError(problems)
    assert region is not None and network is not None
    return StackConfig(
        project=project,
        stack=stack,
        region=region,
        network=network,
        developers=tuple(developers),
        tags=tags,
        production=production,
        production_zone=production_zones[0] if production_zones else "",
        production_zones=production_zones,
        pipeline=pipeline,
        account_id=account_id,
        instance_role_policies=instance_role_policies,
        ci=ci,
    )


def load_from_pulumi() -> StackConfig:
    """Read the running stack's whole config through the Pulumi SDK and validate it."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw = {key: runtime_config.get_config(key) for key in sorted(keys)}
    return parse_stack_config(raw, project=pulumi.get_project(), stack=pulumi.get_stack())

