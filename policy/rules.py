"""The S and R rules of SECURITY.md as predicates over one resource: (props, options) -> messages.

Props use Pulumi's wire names (camelCase), as both `devprod plan` and CrossGuard
see them. Values a preview does not know yet (anything not of the expected
type) are skipped, never guessed. The same Rule objects back the CrossGuard
pack (policy/__main__.py) and `devprod plan`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from devprod.contracts import ACCESS_TAG, DEVELOPER_TAG, OPERATOR_TAG, PRODUCTION_ROLE, ROLE_TAG, STACK_TAG
from policy import iam, workflows

Props = Mapping[str, Any]
Options = Mapping[str, Any]  # protect, ignoreChanges, deleteBeforeReplace, retainOnDelete (None: unknown)

INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ROLE = "aws:iam/role:Role"
POLICY_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
MANAGED_POLICY = "aws:iam/policy:Policy"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
CODEBUILD = "aws:codebuild/project:Project"
PIPELINE = "aws:codepipeline/pipeline:Pipeline"
DOCUMENT = "aws:ssm/document:Document"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
# TLS 1.2+ only, forward secrecy (S30); newer AWS policies join this list when adopted.
TLS_POLICIES = ("ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
                "ELBSecurityPolicy-TLS13-1-3-2021-06", "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
                "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09", "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09")
RELEASES = "releases/*"
CHECKSUM_PATTERNS = ("^([0-9a-f]{64})?$", "^[0-9a-f]{64}$")
REPOSITORY_FILE = "github:index/repositoryFile:RepositoryFile"
WORKFLOWS_DIR = ".github/workflows/"

ADMIN_PORTS = (22, 3389)
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$")
SECRET_LOOKING = re.compile(r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|aws_secret_access_key)", re.I)
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|API_KEY|_KEY$)", re.I)


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    description: str
    types: tuple[str, ...]
    check: Callable[[Props, Options], list[str]]

    def applies(self, resource_type: str) -> bool:
        return resource_type in self.types

    def __call__(self, resource_type: str, props: Props, options: Options) -> list[str]:
        if not self.applies(resource_type):
            return []
        return [f"{self.id}: {m}" for m in self.check(props, options)]


def _tags(props: Props) -> Mapping[str, Any]:
    tags = props.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def _role(props: Props) -> str | None:
    return _tags(props).get(ROLE_TAG)


# ------------------------------------------------------------------ hosts


def s1_imdsv2(props: Props, _: Options) -> list[str]:
    meta = props.get("metadataOptions")
    if not isinstance(meta, Mapping):
        return ["metadataOptions is missing; httpTokens must be 'required' (IMDSv2)"]
    problems = []
    if meta.get("httpTokens") != "required":
        problems.append(f"metadataOptions.httpTokens must be 'required' (IMDSv2), got {meta.get('httpTokens')!r}")
    hops = meta.get("httpPutResponseHopLimit")
    if hops is not None and not isinstance(hops, str) and hops != 1:
        problems.append(f"metadataOptions.httpPutResponseHopLimit must be 1, got {hops!r}")
    return problems


def _kms(where: str, value: Any) -> list[str]:
    if isinstance(value, str) and value and not KMS_KEY_ARN.match(value):
        return [f"{where} must be a KMS key ARN, not {value!r} (an alias forces a replacement on every update)"]
    return []


def s2_instance_encrypted(props: Props, _: Options) -> list[str]:
    problems = []
    root = props.get("rootBlockDevice")
    if not isinstance(root, Mapping) or root.get("encrypted") is not True:
        problems.append("rootBlockDevice.encrypted must be true")
    else:
        problems += _kms("rootBlockDevice.kmsKeyId", root.get("kmsKeyId"))
    for index, device in enumerate(props.get("ebsBlockDevices") or []):
        if isinstance(device, Mapping) and device.get("encrypted") is not True:
            problems.append(f"ebsBlockDevices[{index}].encrypted must be true")
    return problems


def s2_volume_encrypted(props: Props, _: Options) -> list[str]:
    problems = [] if props.get("encrypted") is True else ["encrypted must be true"]
    return problems + _kms("kmsKeyId", props.get("kmsKeyId"))


def _open_to_world(cidrs: Iterable[Any]) -> list[str]:
    world = []
    for cidr in cidrs or []:
        try:
            if ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0:
                world.append(str(cidr))
        except ValueError:
            continue
    return world


def _rule_problems(where: str, rule: Mapping[str, Any]) -> list[str]:
    problems = []
    if not rule.get("description"):
        problems.append(f"{where} has no description")
    protocol = str(rule.get("protocol", rule.get("ipProtocol", "")))
    low, high = rule.get("fromPort"), rule.get("toPort")
    all_ports = protocol in ("-1", "all") or (low in (0, None) and high in (65535, None) and protocol != "icmp")
    covers = [p for p in ADMIN_PORTS if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= p <= high]
    sources = list(rule.get("cidrBlocks") or []) + list(rule.get("ipv6CidrBlocks") or [])
    for key in ("cidrIpv4", "cidrIpv6"):
        if rule.get(key):
            sources.append(rule[key])
    world = _open_to_world(sources)
    if world and (all_ports or covers):
        what = "all ports" if all_ports else f"port {covers[0]}"
        problems.append(f"{where} opens {what} to {world[0]}")
    return problems


def admin_ports_group(props: Props, _: Options) -> list[str]:
    problems = []
    for index, rule in enumerate(props.get("ingress") or []):
        if isinstance(rule, Mapping):
            problems += _rule_problems(f"ingress[{index}]", rule)
    for index, rule in enumerate(props.get("egress") or []):
        if isinstance(rule, Mapping) and not rule.get("description"):
            problems.append(f"egress[{index}] has no description")
    return problems


def admin_ports_rule(props: Props, _: Options) -> list[str]:
    if props.get("type", "ingress") != "ingress":
        return [] if props.get("description") else ["rule has no description"]
    return _rule_problems("rule", props)


def s4_production_has_no_ssh(props: Props, _: Options) -> list[str]:
    if _role(props) != PRODUCTION_ROLE:
        return []
    problems = []
    if props.get("keyName"):
        problems.append(f"the production host must have no key pair, got keyName {props['keyName']!r}")
    for index, rule in enumerate(props.get("ingress") or []):
        low, high = rule.get("fromPort"), rule.get("toPort")
        if str(rule.get("protocol")) == "-1" or (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= 22 <= high):
            problems.append(f"ingress[{index}] admits SSH to production; administer it through SSM")
    return problems


def s7_user_data(props: Props, _: Options) -> list[str]:
    text = props.get("userData")
    if not isinstance(text, str):
        return []
    problems = []
    size = len(text.encode())
    if size > 16384:
        problems.append(f"userData is {size} bytes; EC2 allows 16384")
    found = SECRET_LOOKING.search(text)
    if found:
        problems.append(f"userData contains something secret-looking ({found.group(0)[:12]}...)")
    return problems


# ------------------------------------------------------------------ buckets, logs, builds


def s8_bucket_settings(props: Props, _: Options) -> list[str]:
    if "blockPublicAcls" in props:
        off = [k for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets") if props.get(k) is not True]
        return [f"{k} must be true" for k in off]
    if "rule" in props:
        ownership = (props.get("rule") or {}).get("objectOwnership")
        return [] if ownership == "BucketOwnerEnforced" else [f"rule.objectOwnership must be BucketOwnerEnforced, got {ownership!r}"]
    if "versioningConfiguration" in props:
        status = (props.get("versioningConfiguration") or {}).get("status")
        return [] if status == "Enabled" else [f"versioningConfiguration.status must be Enabled, got {status!r}"]
    if "rules" in props:
        rules = props.get("rules") or []
        algorithms = [((r or {}).get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm") for r in rules]
        return [] if any(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in algorithms) else ["no default encryption rule"]
    if props.get("acl") in ("public-read", "public-read-write", "authenticated-read"):
        return [f"acl {props['acl']!r} makes the bucket readable by others"]
    return []


def s9_log_retention(props: Props, _: Options) -> list[str]:
    days = props.get("retentionInDays")
    if days in (None, 0):
        return ["retentionInDays must be set (logs otherwise never expire)"]
    return []


def s10_codebuild(props: Props, _: Options) -> list[str]:
    problems = []
    environment = props.get("environment") or {}
    if environment.get("privilegedMode") is True:
        problems.append("environment.privilegedMode must be false")
    logs = ((props.get("logsConfig") or {}).get("cloudwatchLogs") or {})
    if logs.get("status") == "DISABLED" or not props.get("logsConfig"):
        problems.append("logsConfig.cloudwatchLogs must be enabled")
    for variable in environment.get("environmentVariables") or []:
        if variable.get("type", "PLAINTEXT") == "PLAINTEXT" and SECRET_NAME.search(str(variable.get("name", ""))):
            problems.append(f"environment variable {variable.get('name')!r} looks secret; use type PARAMETER_STORE")
    return problems


def s11_pipeline(props: Props, _: Options) -> list[str]:
    problems = []
    if props.get("pipelineType") != "V2":
        problems.append(f"pipelineType must be V2, got {props.get('pipelineType')!r}")
    if props.get("executionMode") != "QUEUED":
        problems.append(f"executionMode must be QUEUED, got {props.get('executionMode')!r}")
    return problems


# ------------------------------------------------------------------ IAM


def _documents(props: Props) -> list[tuple[str, str]]:
    found = []
    if isinstance(props.get("policy"), str):
        found.append(("policy", props["policy"]))
    for index, inline in enumerate(props.get("inlinePolicies") or []):
        if isinstance(inline, Mapping) and isinstance(inline.get("policy"), str):
            found.append((f"inlinePolicies[{index}]", inline["policy"]))
    return found


def s12_no_wildcards(props: Props, _: Options) -> list[str]:
    problems = []
    for where, text in _documents(props):
        problems += [f"{where} {p}" for p in iam.wildcard_problems(text)]
        problems += [f"{where} {p}" for p in iam.duplicate_keys(text)]
    return problems


def _trust(props: Props) -> dict[str, Any] | None:
    text = props.get("assumeRolePolicy")
    if not isinstance(text, str):
        return None
    return json.loads(text)


def _federated_github(trust: dict[str, Any]) -> bool:
    return any(
        isinstance(s.get("Principal"), Mapping)
        and str(s["Principal"].get("Federated", "")).endswith(f"oidc-provider/{iam.GITHUB_ISSUER}")
        for s in iam.statements(trust)
    )


def s13_service_trust(props: Props, _: Options) -> list[str]:
    trust = _trust(props)
    if trust is None or _federated_github(trust):
        return []
    services = {
        service
        for s in iam.statements(trust)
        if isinstance(s.get("Principal"), Mapping)
        for service in ([s["Principal"].get("Service")] if isinstance(s["Principal"].get("Service"), str) else s["Principal"].get("Service") or [])
    }
    only = next(iter(services)) if len(services) == 1 else None
    problems = iam.service_trust_problems(trust, only)
    problems += [f"assumeRolePolicy {p}" for p in iam.duplicate_keys(props["assumeRolePolicy"])]
    return problems


def s14_github_trust(props: Props, _: Options) -> list[str]:
    """Any role GitHub can assume: exactly one statement, aud, and one subject in an exact form."""
    trust = _trust(props)
    if trust is None or not _federated_github(trust):
        return []
    problems = iam.duplicate_keys(props["assumeRolePolicy"])
    statements = iam.statements(trust)
    if len(statements) != 1:
        return problems + ["a GitHub trust must have exactly one statement"]
    principal = statements[0].get("Principal")
    provider = str(principal.get("Federated", "")) if isinstance(principal, Mapping) else ""
    return problems + iam.github_trust_problems(trust, provider_arn=provider)


def s15_session_length(props: Props, _: Options) -> list[str]:
    trust = _trust(props)
    if trust is None or not _federated_github(trust):
        return []
    duration = props.get("maxSessionDuration", 3600)
    if isinstance(duration, str) or duration <= 3600:
        return []
    return [f"maxSessionDuration {duration} exceeds 3600 seconds; a GitHub-assumed role's sessions last at most an hour"]


def s16_never_run_shell_script(props: Props, _: Options) -> list[str]:
    problems = []
    for where, text in _documents(props):
        if "AWS-RunShellScript" in text and "SendCommand" in text:
            problems.append(f"{where} grants ssm:SendCommand with AWS-RunShellScript; only the deploy document")
    return problems


def s18_document(props: Props, _: Options) -> list[str]:
    if props.get("documentType") != "Command" or not isinstance(props.get("content"), str):
        return []
    try:
        content = json.loads(props["content"])
    except ValueError:
        return ["content is not JSON (use documentFormat JSON)"]
    problems = []
    if content.get("schemaVersion") != "2.2":
        problems.append(f"schemaVersion must be 2.2, got {content.get('schemaVersion')!r}")
    for name, parameter in (content.get("parameters") or {}).items():
        if not parameter.get("allowedPattern"):
            problems.append(f"parameter {name!r} has no allowedPattern")
        if parameter.get("interpolationType") != "ENV_VAR":
            problems.append(f"parameter {name!r} must use interpolationType ENV_VAR")
    if "{{" in json.dumps(content.get("mainSteps", [])):
        problems.append("mainSteps paste {{ parameters }} into shell text; read SSM_<name> variables instead")
    return problems


# ------------------------------------------------------------------ releases (S26)


def _denies(document: Mapping[str, Any], action: str, resource_suffix: str) -> list[Mapping[str, Any]]:
    return [
        s
        for s in iam.statements(dict(document))
        if s.get("Effect") == "Deny"
        and s.get("Principal") in ("*", {"AWS": "*"})
        and action in iam.as_list(s.get("Action"))
        and any(str(r).endswith(resource_suffix) for r in iam.as_list(s.get("Resource")))
    ]


def s26_bucket_policy(props: Props, _: Options) -> list[str]:
    """The artifact bucket refuses a second write of a release and any delete of one."""
    text = props.get("policy")
    if not isinstance(text, str):
        return []
    document = json.loads(text)
    problems = []
    writes = _denies(document, "s3:PutObject", f"/{RELEASES}")
    if not any((s.get("Condition") or {}).get("Null", {}).get("s3:if-none-match") == "true" for s in writes):
        problems.append(f"the bucket policy must deny s3:PutObject on {RELEASES} without If-None-Match (a write that could replace a release)")
    writers = [s for s in writes if not s.get("Condition") or set(s["Condition"]) == {"ArnNotEquals"}]
    named = [((s.get("Condition") or {}).get("ArnNotEquals") or {}).get("aws:PrincipalArn") for s in writers]
    if not writers or any(n is not None and not (isinstance(n, str) and ":role/" in n) for n in named):
        problems.append(
            f"the bucket policy must deny s3:PutObject on {RELEASES} to every principal but the Release role "
            "(ArnNotEquals aws:PrincipalArn)"
        )
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        if not [s for s in _denies(document, action, f"/{RELEASES}") if not s.get("Condition")]:
            problems.append(f"the bucket policy must deny {action} on {RELEASES} to everyone")
    return problems


def s26_document_checksum(props: Props, _: Options) -> list[str]:
    """A deploy document takes the checksum the host verifies as a parameter."""
    if props.get("documentType") != "Command" or not isinstance(props.get("content"), str):
        return []
    parameters = (json.loads(props["content"]).get("parameters") or {})
    if "release" not in parameters:
        return []
    pattern = (parameters.get("checksum") or {}).get("allowedPattern")
    if pattern not in CHECKSUM_PATTERNS:
        return [f"parameter 'checksum' must exist with allowedPattern {CHECKSUM_PATTERNS[0]!r}, got {pattern!r}"]
    return []


def s26_codebuild_holds_no_secrets(props: Props, _: Options) -> list[str]:
    """The stage that runs repository code gets no secret, not even by reference."""
    environment = props.get("environment") or {}
    return [
        f"environment variable {v.get('name')!r} of type {v.get('type')} hands a secret to repository code"
        for v in environment.get("environmentVariables") or []
        if v.get("type") in ("PARAMETER_STORE", "SECRETS_MANAGER")
    ]


# ------------------------------------------------------------------ workflows devprod writes


def _workflow(props: Props) -> tuple[str, str] | None:
    path, content = props.get("file"), props.get("content")
    if isinstance(path, str) and path.startswith(WORKFLOWS_DIR) and isinstance(content, str):
        return path, content
    return None


def s27_workflow_secrets_behind_environments(props: Props, _: Options) -> list[str]:
    found = _workflow(props)
    return [f"{found[0]}: {p}" for p in workflows.pull_request_exposures(found[1])] if found else []


def s28_workflow_actions_pinned(props: Props, _: Options) -> list[str]:
    found = _workflow(props)
    return [f"{found[0]}: {p}" for p in workflows.uses_problems(found[1])] if found else []


# ------------------------------------------------------------------ people (S29)

# What a developer's access policy may allow, and nothing else.
BOX_ACTIONS = ("ssm:StartSession", "ec2:StartInstances", "ec2:StopInstances")
OWN_SESSION_ACTIONS = ("ssm:TerminateSession", "ssm:ResumeSession")
STATE_READS = ("ec2:DescribeInstances", "ssm:DescribeInstanceInformation")
SESSION_DOCUMENTS = ("SSM-SessionManagerRunShell", "AWS-StartSSHSession")
ONE_INSTANCE = re.compile(r"^arn:aws[a-z-]*:ec2:[a-z0-9-]+:[0-9]{12}:instance/[A-Za-z0-9-]+$")
SESSION_DOCUMENT = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:([0-9]{12}|\*)?:document/(" + "|".join(SESSION_DOCUMENTS) + ")$")
OWN_SESSIONS = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9*-]+:[0-9]{12}:session/\$\{aws:username\}-\*$")
ANY_SESSION = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9*-]+:[0-9]{12}:session/\*$")
SESSION_OWNER_TAG = "ssm:resourceTag/aws:ssmmessages:session-id"
TAG_CONDITION = {"ssm:StartSession": f"ssm:resourceTag/{DEVELOPER_TAG}", "ec2:StartInstances": f"aws:ResourceTag/{DEVELOPER_TAG}",
                 "ec2:StopInstances": f"aws:ResourceTag/{DEVELOPER_TAG}"}


def _own_sessions_problems(where: str, statement: Mapping[str, Any], actions: list[str], resources: list[str]) -> list[str]:
    """Ending or resuming sessions: the caller's own only, tagged with their user id; to end one,
    also session/${aws:username}-* (a name prefix: never enough to resume, which hands over the stream)."""
    owner = ((statement.get("Condition") or {}).get("StringLike") or {}).get(SESSION_OWNER_TAG)
    problems = []
    for action in [a for a in actions if a in OWN_SESSION_ACTIONS]:
        by_name = action == "ssm:TerminateSession"
        others = [r for r in resources if not (by_name and OWN_SESSIONS.match(r))
                  and not (ANY_SESSION.match(r) and owner == "${aws:userid}")]
        if others:
            problems.append(
                f"{where}: {action} on {others}; only the caller's own sessions "
                f"(session/* with {SESSION_OWNER_TAG} = ${{aws:userid}}; to end one also session/${{aws:username}}-*)"
            )
    return problems


def _person_statements(text: str, scope: str, allowed: tuple[str, ...], problems: list[str]):
    """A person's Allow statements as (where, statement, actions, resources), after the checks
    every S29 policy shares (appended to `problems`): no NotAction/NotResource, only `allowed`
    actions, sessions only the caller's own."""
    for index, statement in enumerate(iam.statements(text)):
        if statement.get("Effect") != "Allow":
            continue
        where = f"Statement[{index}]"
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: NotAction/NotResource grants more than {scope}")
            continue
        actions = [str(a) for a in iam.as_list(statement.get("Action"))]
        resources = [str(r) for r in iam.as_list(statement.get("Resource"))]
        problems += [f"{where}: {a!r} is not one of {', '.join(allowed)}" for a in actions if a not in allowed]
        problems += _own_sessions_problems(where, statement, actions, resources)
        yield where, statement, actions, resources


def s29_developer_access(props: Props, _: Options) -> list[str]:
    """A developer's access policy acts on one instance, tagged as theirs, and on their own sessions only."""
    developer = _tags(props).get(ACCESS_TAG)
    text = props.get("policy")
    if developer is None or not isinstance(text, str):
        return []
    problems: list[str] = []
    for where, statement, actions, resources in _person_statements(
            text, f"{developer}'s own box", BOX_ACTIONS + OWN_SESSION_ACTIONS + STATE_READS, problems):
        for action in [a for a in actions if a in BOX_ACTIONS]:
            instances = [r for r in resources if ":instance/" in r or r == "*"]
            rest = [r for r in resources if r not in instances]
            loose = [r for r in instances if not ONE_INSTANCE.match(r)]
            if loose:
                problems.append(f"{where}: {action} on {loose}; name {developer}'s one instance by ARN")
            bad_documents = [r for r in rest if action != "ssm:StartSession" or not SESSION_DOCUMENT.match(r)]
            if bad_documents:
                problems.append(f"{where}: {action} on {bad_documents}; only {developer}'s instance and the session documents {', '.join(SESSION_DOCUMENTS)}")
            if instances:
                key = TAG_CONDITION[action]
                tagged = ((statement.get("Condition") or {}).get("StringEquals") or {}).get(key)
                if tagged != developer:
                    problems.append(f"{where}: {action} must require {key} = {developer!r} (got {tagged!r}): the box must be {developer}'s")
    return problems


# What operators' access policy may allow: production's host, its deploy document, log and releases.
OPERATOR_HOST_ACTIONS = ("ssm:StartSession", "ssm:SendCommand")
OPERATOR_READS = ("ec2:DescribeInstances", "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation",
                  "ssm:ListCommandInvocations", "ssm:ListCommands", "logs:DescribeLogStreams", "logs:GetLogEvents",
                  "logs:FilterLogEvents", "s3:ListBucket", "s3:GetObject")
SHELL_DOCUMENT = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:document/SSM-SessionManagerRunShell$")
# A document of the account (the deploy document): never one of AWS's (AWS-RunShellScript runs anything).
ACCOUNT_DOCUMENT = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:document/(?!AWS-)[A-Za-z0-9_.-]+$")


def _operator_host_problems(where: str, statement: Mapping[str, Any], action: str, resources: list[str], stack: str) -> list[str]:
    instances = [r for r in resources if ":instance/" in r or r == "*"]
    documents = [r for r in resources if r not in instances]
    problems = []
    loose = [r for r in instances if not ONE_INSTANCE.match(r)]
    if loose:
        problems.append(f"{where}: {action} on {loose}; name the production host's one instance by ARN")
    allowed_document = SHELL_DOCUMENT if action == "ssm:StartSession" else ACCOUNT_DOCUMENT
    bad = [r for r in documents if not allowed_document.match(r)]
    if bad:
        what = "the shell document SSM-SessionManagerRunShell" if action == "ssm:StartSession" else "the deploy document"
        problems.append(f"{where}: {action} on {bad}; only the production host and {what}")
    if instances:
        tags = ((statement.get("Condition") or {}).get("StringEquals") or {})
        want = {f"ssm:resourceTag/{ROLE_TAG}": PRODUCTION_ROLE, f"ssm:resourceTag/{STACK_TAG}": stack}
        wrong = {k: tags.get(k) for k, v in want.items() if tags.get(k) != v}
        if wrong:
            problems.append(f"{where}: {action} must require {want} (got {wrong}): production's host, never a developer box")
    return problems


# Issue #15: the live release (`devprod deploy/rollback`), the Bake stage's
# transition (`devprod freeze`) and the hosts' health behind the load balancer.
OPERATOR_RELEASE_ACTIONS = ("ssm:GetParameter", "ssm:PutParameter")
OPERATOR_PIPELINE_ACTIONS = ("codepipeline:DisableStageTransition", "codepipeline:EnableStageTransition",
                             "codepipeline:GetPipelineState")
OPERATOR_UNSCOPED = ("elasticloadbalancing:DescribeTargetHealth",)
# A rolling deploy takes each batch out of the stack's target group and back (devprod.rollout).
OPERATOR_TARGET_ACTIONS = ("elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets")
# One target group by its full ARN (name and id): never a wildcard.
ONE_TARGET_GROUP = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]+/[0-9a-f]+$")
# A pipeline, or its stages (pipeline/stage or pipeline/*), by name: never any pipeline.
ONE_PIPELINE = re.compile(r"^arn:aws[a-z-]*:codepipeline:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9.@_-]+(/([A-Za-z0-9.@_-]+|\*))?$")


def _operator_release_problems(where: str, actions: list[str], resources: list[str], stack: str) -> list[str]:
    """The live-release parameter of this stack only; pipeline actions on one named pipeline only."""
    problems = []
    live = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter" + re.escape(f"/devprod/{stack}/live-release") + "$")
    if any(a in OPERATOR_RELEASE_ACTIONS for a in actions):
        bad = [r for r in resources if not live.match(r)]
        if bad:
            problems.append(f"{where}: parameter actions on {bad}; only /devprod/{stack}/live-release")
    if any(a in OPERATOR_PIPELINE_ACTIONS for a in actions):
        bad = [r for r in resources if not ONE_PIPELINE.match(r)]
        if bad:
            problems.append(f"{where}: pipeline actions on {bad}; only this stack's pipeline, by ARN")
    if any(a in OPERATOR_TARGET_ACTIONS for a in actions):
        bad = [r for r in resources if not ONE_TARGET_GROUP.match(r)]
        if bad or len(resources) != 1:
            problems.append(f"{where}: target registration on {bad or resources}; only this stack's one "
                            "target group, by ARN")
    return problems


def s29_operator_access(props: Props, _: Options) -> list[str]:
    """Operators' policy acts on this stack's production hosts (by ARN and tags), its deploy document,
    log, live-release parameter, pipeline's transitions and target group's registrations only."""
    stack = _tags(props).get(OPERATOR_TAG)
    text = props.get("policy")
    if stack is None or not isinstance(text, str):
        return []
    problems: list[str] = []
    allowed = (OPERATOR_HOST_ACTIONS + OWN_SESSION_ACTIONS + OPERATOR_READS + OPERATOR_RELEASE_ACTIONS
               + OPERATOR_PIPELINE_ACTIONS + OPERATOR_UNSCOPED + OPERATOR_TARGET_ACTIONS)
    for where, statement, actions, resources in _person_statements(text, "production", allowed, problems):
        for action in [a for a in actions if a in OPERATOR_HOST_ACTIONS]:
            problems += _operator_host_problems(where, statement, action, resources, stack)
        problems += _operator_release_problems(where, actions, resources, str(stack))
    return problems


# ------------------------------------------------------------------ change safety


def r1_instance_changes(props: Props, options: Options) -> list[str]:
    ignored = set(options.get("ignoreChanges") or [])
    if _role(props) == "developer":
        missing = [p for p in ("ami", "userData") if p not in ignored]
        return [f"a developer box must ignore changes to {', '.join(missing)}"] if missing else []
    return []


def r2_home_volume(props: Props, options: Options) -> list[str]:
    if "devprod:home-of" not in _tags(props):
        return []
    problems = []
    if options.get("retainOnDelete") is False:  # None: not visible (CrossGuard does not pass it)
        problems.append("a home volume must have retainOnDelete")
    if not props.get("availabilityZone"):
        problems.append("a home volume must pin its availabilityZone")
    return problems


def r2_attachment(props: Props, options: Options) -> list[str]:
    if options.get("deleteBeforeReplace") is not True:
        return ["a volume attachment must use deleteBeforeReplace"]
    return []


def r4_termination_protection(props: Props, _: Options) -> list[str]:
    if _role(props) == PRODUCTION_ROLE and props.get("disableApiTermination") is not True:
        return ["the production host must set disableApiTermination"]
    return []


# ------------------------------------------------------------------ load balancer


def s30_load_balancer(props: Props, _: Options) -> list[str]:
    problems = []
    if props.get("loadBalancerType", "application") == "application" and props.get("dropInvalidHeaderFields") is not True:
        problems.append("an application load balancer must set dropInvalidHeaderFields")
    if props.get("enableDeletionProtection") is not True:
        problems.append("the production load balancer must set enableDeletionProtection")
    return problems


def _redirects_to_https(action: Mapping[str, Any]) -> bool:
    redirect = action.get("redirect") or {}
    return (action.get("type") == "redirect" and redirect.get("protocol") == "HTTPS"
            and redirect.get("statusCode") == "HTTP_301")


def s30_listener(props: Props, _: Options) -> list[str]:
    """HTTPS with a TLS 1.2+ policy, or plain HTTP whose every action is a 301 to HTTPS."""
    protocol = props.get("protocol")
    actions = list(props.get("defaultActions") or [])
    if protocol == "HTTPS":
        if props.get("sslPolicy") not in TLS_POLICIES:
            return [f"HTTPS listener sslPolicy {props.get('sslPolicy')!r} is not one of {', '.join(TLS_POLICIES)}"]
        return []
    if protocol == "HTTP":
        if not actions or not all(_redirects_to_https(a) for a in actions):
            return ["an HTTP listener may only redirect to HTTPS (301)"]
        return []
    return [f"listener protocol {protocol!r}: production serves HTTPS (and HTTP only to redirect)"]


RULES: tuple[Rule, ...] = (
    Rule("S1", "imdsv2-required", "Instances require IMDSv2 with hop limit 1", (INSTANCE,), s1_imdsv2),
    Rule("S2", "instance-volumes-encrypted", "Root and attached volumes are encrypted; KMS keys by ARN", (INSTANCE,), s2_instance_encrypted),
    Rule("S2", "ebs-volumes-encrypted", "EBS volumes are encrypted; KMS keys by ARN", (VOLUME,), s2_volume_encrypted),
    Rule("S3", "no-admin-ports-from-anywhere", "No 22/3389/all ports from /0; every rule described", (SECURITY_GROUP,), admin_ports_group),
    Rule("S3", "no-admin-ports-from-anywhere-rules", "Standalone rules: no 22/3389/all ports from /0; described", (SG_RULE, SG_INGRESS), admin_ports_rule),
    Rule("S4", "production-ssm-only", "Production has no key pair and no SSH ingress", (INSTANCE, SECURITY_GROUP), s4_production_has_no_ssh),
    Rule("S7", "user-data-clean", "User data under 16 KB with nothing secret-looking", (INSTANCE,), s7_user_data),
    Rule("S8", "artifact-bucket-private", "Buckets private, owner-enforced, versioned, encrypted", (PUBLIC_ACCESS, OWNERSHIP, VERSIONING, ENCRYPTION, BUCKET), s8_bucket_settings),
    Rule("S9", "log-retention", "Every log group has a retention period", (LOG_GROUP,), s9_log_retention),
    Rule("S10", "codebuild-hardened", "CodeBuild unprivileged, logged, no secret plaintext variables", (CODEBUILD,), s10_codebuild),
    Rule("S11", "pipeline-v2-queued", "CodePipeline is V2 in QUEUED mode", (PIPELINE,), s11_pipeline),
    Rule("S12", "iam-no-wildcards", "No wildcard actions, no Resource * where scoping exists", POLICY_TYPES + (ROLE,), s12_no_wildcards),
    Rule("S13", "service-trust", "Service roles trust one service with a source condition", (ROLE,), s13_service_trust),
    Rule("S14", "github-oidc-trust", "GitHub OIDC trust pins aud and exactly one exact subject", (ROLE,), s14_github_trust),
    Rule("S15", "github-session-length", "Roles GitHub assumes: sessions last at most an hour", (ROLE,), s15_session_length),
    Rule("S16", "no-run-shell-script", "SendCommand never on AWS-RunShellScript", POLICY_TYPES + (ROLE,), s16_never_run_shell_script),
    Rule("S18", "deploy-document-safe", "SSM documents: schema 2.2, patterns, ENV_VAR interpolation", (DOCUMENT,), s18_document),
    Rule("S26", "releases-immutable", "The bucket refuses overwriting or deleting releases", (BUCKET_POLICY,), s26_bucket_policy),
    Rule("S26", "deploy-document-checksum", "Deploy documents take the checksum as a 64-hex parameter", (DOCUMENT,), s26_document_checksum),
    Rule("S26", "test-stage-no-secrets", "CodeBuild projects hold no Parameter Store or Secrets Manager values", (CODEBUILD,), s26_codebuild_holds_no_secrets),
    Rule("S27", "workflow-secrets-behind-environments", "Managed workflows: no secret or OIDC token for pull requests outside an environment", (REPOSITORY_FILE,), s27_workflow_secrets_behind_environments),
    Rule("S28", "workflow-actions-pinned", "Managed workflows pin every action to a full commit SHA", (REPOSITORY_FILE,), s28_workflow_actions_pinned),
    Rule("S29", "developer-access-own-box", "A developer's access policy acts on their own box and sessions only", (MANAGED_POLICY,), s29_developer_access),
    Rule("S30", "load-balancer-hardened", "The load balancer drops invalid headers and is deletion-protected", (LOAD_BALANCER,), s30_load_balancer),
    Rule("S30", "https-only-listeners", "Listeners: HTTPS with a TLS 1.2+ policy; HTTP only redirects (301)", (LISTENER,), s30_listener),
    Rule("S29", "operator-access-production-only", "Operators' access policy acts on production's host, deploy document and log only", (MANAGED_POLICY,), s29_operator_access),
    Rule("R1", "boxes-not-replaced", "Developer boxes ignore ami and userData", (INSTANCE,), r1_instance_changes),
    Rule("R2", "home-volume-kept", "Home volumes retained and pinned", (VOLUME,), r2_home_volume),
    Rule("R2b", "attachment-delete-before-replace", "Volume attachments use deleteBeforeReplace", (ATTACHMENT,), r2_attachment),
    Rule("R4", "production-termination-protected", "The production host has termination protection", (INSTANCE,), r4_termination_protection),
)


def violations(resource_type: str, props: Props, options: Options) -> list[str]:
    out: list[str] = []
    for rule in RULES:
        out += rule(resource_type, props, options)
    return out
