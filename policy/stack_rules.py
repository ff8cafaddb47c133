"""The rules that need more than one resource (S20-S22, S24-S27).

Which policies reach a role, which key encrypts a topic and whether a VPC has
flow logs are relations between resources, so these rules read the whole
stack: a list of `StackResource` (props plus the values other resources use to
refer to it). Values a preview does not know yet are skipped, never guessed;
`devprod plan` knows them all (its mocks compute placeholders). The same rules
back the CrossGuard pack (one stack policy each) and `devprod plan`.
"""

from __future__ import annotations

import re

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from devprod.contracts import DEVELOPER_ROLE, PRODUCTION_ROLE, ROLE_TAG, STACK_TAG
from policy import iam

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"
KMS_KEY = "aws:kms/key:Key"
TOPIC = "aws:sns/topic:Topic"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
CODEBUILD = "aws:codebuild/project:Project"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"

# What a box must never be able to call, directly or through a wildcard (S21).
PARAMETER_READS = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory")
DECRYPT = ("kms:Decrypt",)
EVENTS_PRINCIPAL = "events.amazonaws.com"


@dataclass(frozen=True)
class StackResource:
    urn: str
    type: str
    name: str
    props: Mapping[str, Any]
    # The values other resources hold to refer to this one (its id, name, ARN).
    refs: frozenset[str] = frozenset()

    def tag(self, key: str) -> str | None:
        tags = self.props.get("tags")
        return tags.get(key) if isinstance(tags, Mapping) else None


@dataclass(frozen=True)
class StackContext:
    # Managed policies the stack config allows on instance roles (S20).
    allowed_managed_policies: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Finding:
    urn: str
    name: str
    message: str


@dataclass(frozen=True)
class StackRule:
    id: str
    name: str
    description: str
    check: Callable[[Sequence[StackResource], StackContext], Iterable[tuple[StackResource, str]]]

    def __call__(self, resources: Sequence[StackResource], context: StackContext) -> list[Finding]:
        return [Finding(r.urn, r.name, f"{self.id}: {m}") for r, m in self.check(resources, context)]


# ------------------------------------------------------------------ relations


def _of_type(resources: Sequence[StackResource], type_: str) -> list[StackResource]:
    return [r for r in resources if r.type == type_]


def _refers_to(value: Any, target: StackResource) -> bool:
    return isinstance(value, str) and value in target.refs


def _trust_services(role: StackResource) -> set[str]:
    text = role.props.get("assumeRolePolicy")
    if not isinstance(text, str):
        return set()
    services: set[str] = set()
    for statement in iam.statements(text):
        principal = statement.get("Principal")
        if isinstance(principal, Mapping):
            value = principal.get("Service")
            services.update([value] if isinstance(value, str) else value or [])
    return services


def instance_roles(resources: Sequence[StackResource]) -> list[StackResource]:
    """Roles an EC2 instance can assume: what a shell on the host holds."""
    return [r for r in _of_type(resources, ROLE) if "ec2.amazonaws.com" in _trust_services(r)]


def role_documents(role: StackResource, resources: Sequence[StackResource]) -> Iterator[tuple[StackResource, str]]:
    """Every inline policy document that reaches `role`, with the resource that carries it."""
    for inline in role.props.get("inlinePolicies") or []:
        if isinstance(inline, Mapping) and isinstance(inline.get("policy"), str):
            yield role, inline["policy"]
    for policy in _of_type(resources, ROLE_POLICY):
        if _refers_to(policy.props.get("role"), role) and isinstance(policy.props.get("policy"), str):
            yield policy, policy.props["policy"]


def managed_policies(role: StackResource, resources: Sequence[StackResource]) -> Iterator[tuple[StackResource, str]]:
    """Every managed policy ARN attached to `role`, with the resource that attaches it."""
    for arn in role.props.get("managedPolicyArns") or []:
        yield role, str(arn)
    for attachment in _of_type(resources, ROLE_ATTACHMENT):
        if _refers_to(attachment.props.get("role"), role):
            yield attachment, str(attachment.props.get("policyArn"))
    for attachment in _of_type(resources, POLICY_ATTACHMENT):
        if any(_refers_to(r, role) for r in attachment.props.get("roles") or []):
            yield attachment, str(attachment.props.get("policyArn"))


def allowed_actions(document: str, wanted: Sequence[str]) -> list[tuple[dict[str, Any], str]]:
    """(statement, action) for each of `wanted` that an Allow statement grants, wildcards included."""
    found = []
    for statement in iam.statements(document):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            found += [(statement, action) for action in wanted]
            continue
        patterns = [str(a).lower() for a in iam.as_list(statement.get("Action"))]
        for action in wanted:
            if any(fnmatch.fnmatchcase(action.lower(), p) for p in patterns):
                found.append((statement, action))
    return found


# ------------------------------------------------------------------ rules


def s20_no_managed_policies_on_instance_roles(resources, context):
    for role in instance_roles(resources):
        for carrier, arn in managed_policies(role, resources):
            if arn not in context.allowed_managed_policies:
                yield carrier, (
                    f"instance role {role.name} has the managed policy {arn} attached; instance roles get only "
                    "devprod's own policies (allow one by ARN in devprod:instanceRoleManagedPolicies)"
                )


def s21_developer_roles_read_no_secrets(resources, _context):
    for role in instance_roles(resources):
        if role.tag(ROLE_TAG) != DEVELOPER_ROLE:
            continue
        for carrier, document in role_documents(role, resources):
            granted = sorted({a for _, a in allowed_actions(document, PARAMETER_READS + DECRYPT)})
            if granted:
                yield carrier, (
                    f"developer role {role.name} is allowed {', '.join(granted)}; a box may read no "
                    "parameter and decrypt nothing"
                )


def _parameter_prefix(role: StackResource) -> str | None:
    stack = role.tag(STACK_TAG)
    return f":parameter/devprod/{stack}/app" if stack else None


def _outside_path(resource: Any, prefix: str) -> bool:
    """True unless `resource` is the path itself or something beneath it (".../app*" also matches "appx")."""
    parts = str(resource).split(prefix, 1)
    return len(parts) != 2 or not (parts[1] == "" or parts[1].startswith("/"))


def _live_release(resource: Any, role: StackResource) -> bool:
    """Issue #15: this stack's live-release parameter (a plain String, "<sha> <sha256>"), which a
    booting host reads; never another stack's, never a path beneath it."""
    live = re.escape(f":parameter/devprod/{role.tag(STACK_TAG)}/live-release")
    return re.match(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}" + live + "$", str(resource)) is not None


def s22_production_reads_only_its_path(resources, _context):
    for role in instance_roles(resources):
        prefix = _parameter_prefix(role)
        if role.tag(ROLE_TAG) != PRODUCTION_ROLE or prefix is None:
            continue
        for carrier, document in role_documents(role, resources):
            reads = allowed_actions(document, PARAMETER_READS)
            for statement in [s for i, (s, _) in enumerate(reads) if all(s is not t for t, _ in reads[:i])]:
                outside = [r for r in iam.as_list(statement.get("Resource"))
                           if _outside_path(r, prefix) and not _live_release(r, role)]
                if outside:
                    actions = ", ".join(a for t, a in reads if t is statement)
                    yield carrier, (
                        f"production role {role.name} may {actions} on {outside}; only parameters under "
                        f"{prefix.removeprefix(':parameter')}/"
                    )
            for statement, _ in allowed_actions(document, DECRYPT):
                if "*" in iam.as_list(statement.get("Resource")):
                    yield carrier, f"production role {role.name} may kms:Decrypt with any key; name the app parameters key"


def _key_decrypters(key: StackResource) -> list[tuple[Any, dict[str, Any]]]:
    text = key.props.get("policy")
    if not isinstance(text, str):
        return []
    return [(s.get("Principal"), s) for s, _ in allowed_actions(text, DECRYPT)]


def s22_app_parameters_key(resources, _context):
    roles = [r for r in instance_roles(resources) if r.tag(ROLE_TAG) == PRODUCTION_ROLE]
    keys = [k for k in _of_type(resources, KMS_KEY) if k.tag("devprod:purpose") == "app-parameters"]
    if roles and not keys:
        yield roles[0], "no customer-managed key (tag devprod:purpose=app-parameters) for the app's parameters"
    for key in keys:
        for principal, statement in _key_decrypters(key):
            arns = iam.as_list(principal.get("AWS")) if isinstance(principal, Mapping) else [principal]
            strangers = [a for a in arns if not any(_refers_to(a, role) for role in roles)]
            if strangers or not isinstance(principal, Mapping) or set(principal) != {"AWS"}:
                yield key, f"key policy lets {principal!r} decrypt the app's parameters; only the production role may"
            via = ((statement.get("Condition") or {}).get("StringEquals") or {}).get("kms:ViaService", "")
            if not str(via).startswith("ssm."):
                yield key, "the production role's decrypt grant must require kms:ViaService ssm.REGION.amazonaws.com"


def _grants_service(key: StackResource, service: str, actions: Sequence[str]) -> bool:
    text = key.props.get("policy")
    if not isinstance(text, str):
        return True  # not known yet: skip
    granted = {
        action
        for statement, action in allowed_actions(text, actions)
        if isinstance(statement.get("Principal"), Mapping)
        and service in iam.as_list(statement["Principal"].get("Service"))
    }
    return granted == set(actions)


def s24_event_topics_use_a_key_events_can_use(resources, _context):
    targets = [t.props.get("arn") for t in _of_type(resources, EVENT_TARGET)]
    keys = _of_type(resources, KMS_KEY)
    for topic in _of_type(resources, TOPIC):
        if not any(_refers_to(arn, topic) for arn in targets):
            continue
        key_id = topic.props.get("kmsMasterKeyId")
        if key_id is None:
            yield topic, "a topic EventBridge publishes to must be encrypted with a customer-managed key"
            continue
        if not isinstance(key_id, str):
            continue
        if key_id.startswith("alias/aws/"):
            yield topic, f"kmsMasterKeyId {key_id!r} is AWS-managed; EventBridge cannot publish to it"
            continue
        key = next((k for k in keys if _refers_to(key_id, k)), None)
        if key is not None and not _grants_service(key, EVENTS_PRINCIPAL, ("kms:GenerateDataKey", "kms:Decrypt")):
            yield key, f"key of topic {topic.name} must let {EVENTS_PRINCIPAL} use kms:GenerateDataKey* and kms:Decrypt"


RELEASE_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")


def _reaches_releases(resource: Any) -> bool:
    """Does an S3 resource pattern cover an object under releases/ of its bucket?"""
    text = str(resource)
    bucket = text.split("/", 1)[0] if text.startswith("arn:aws:s3:::") else ""
    probe = f"{bucket or 'arn:aws:s3:::any-bucket'}/releases/probe.tar.gz"
    return fnmatch.fnmatchcase(probe, text)


def _named_release_writers(resources) -> list[str]:
    found = []
    for bucket_policy in _of_type(resources, BUCKET_POLICY):
        text = bucket_policy.props.get("policy")
        for statement in iam.statements(text) if isinstance(text, str) else []:
            writer = ((statement.get("Condition") or {}).get("ArnNotEquals") or {}).get("aws:PrincipalArn")
            if statement.get("Effect") == "Deny" and isinstance(writer, str):
                found.append(writer)
    return found


def s26_repository_code_cannot_publish(resources, _context):
    """The role of every CodeBuild project (they run repository code) may not write or delete releases,
    nor be the one principal the bucket lets publish."""
    projects = _of_type(resources, CODEBUILD)
    writers = _named_release_writers(resources)
    for role in _of_type(resources, ROLE):
        users = [p.name for p in projects if _refers_to(p.props.get("serviceRole"), role)]
        if not users:
            continue
        if any(_refers_to(w, role) for w in writers):
            yield role, f"role {role.name} of {', '.join(users)} (runs repository code) is the bucket's release publisher"
        for carrier, document in role_documents(role, resources):
            for statement, action in allowed_actions(document, RELEASE_WRITES):
                if any(_reaches_releases(r) for r in iam.as_list(statement.get("Resource"))):
                    yield carrier, (
                        f"role {role.name} of {', '.join(users)} (runs repository code) may {action} under "
                        "releases/; only the Release action publishes"
                    )
# Verbs that only read; kms:Decrypt reads too (a preview decrypts the state it shows).
READ_VERBS = ("Get", "List", "Describe", "BatchGet", "Head", "Lookup", "Search", "View", "Query", "Scan", "Select")
READ_ACTIONS = frozenset({"kms:decrypt"})


def _reads_only(action: str) -> bool:
    service, _, verb = action.partition(":")
    return action.lower() in READ_ACTIONS or (bool(service) and verb.startswith(READ_VERBS))


def _writes(document: str) -> list[str]:
    """The actions an Allow grants that are not reads (wildcards such as s3:* count as writes)."""
    found = []
    for statement in iam.statements(document):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            found.append("everything but " + ", ".join(map(str, iam.as_list(statement["NotAction"]))))
        found += [str(a) for a in iam.as_list(statement.get("Action")) if not _reads_only(str(a))]
    return found


def github_roles(resources: Sequence[StackResource]) -> Iterator[tuple[StackResource, str]]:
    """Roles a GitHub Actions job can assume, with the one subject each trusts (S14 checks the rest)."""
    for role in _of_type(resources, ROLE):
        text = role.props.get("assumeRolePolicy")
        subject = iam.github_subject_of(text) if isinstance(text, str) else None
        if subject is not None:
            yield role, subject


def s27_ci_identities(resources, _context):
    """A pull-request identity only reads; an identity that writes trusts an environment, not a branch."""
    for role, subject in github_roles(resources):
        if ":environment:" in subject:
            continue
        pull_request = subject.endswith(":pull_request")
        rule = (
            f"trusts pull requests ({subject}); a pull-request identity only reads"
            if pull_request
            else f"trusts a branch ({subject}); an identity that writes trusts one GitHub environment"
        )
        for carrier, document in role_documents(role, resources):
            granted = _writes(document)
            if granted:
                yield carrier, f"role {role.name} may {', '.join(granted)} but {rule}"
        for carrier, arn in managed_policies(role, resources):
            yield carrier, f"role {role.name} has the managed policy {arn} but {rule}"


def s25_vpcs_have_flow_logs(resources, _context):
    flows = [f.props.get("vpcId") for f in _of_type(resources, FLOW_LOG)]
    for vpc in _of_type(resources, VPC):
        if vpc.refs and not any(_refers_to(v, vpc) for v in flows):
            yield vpc, "every VPC devprod creates needs VPC flow logs (aws.ec2.FlowLog with its vpcId)"


def s31_hosts_only_behind_the_load_balancer(resources, _context):
    """With a load balancer in the stack, production hosts admit traffic only from its security groups:
    no CIDR (not even the allowed ranges) may bypass HTTPS and the balancer's header checks."""
    balancers = _of_type(resources, LOAD_BALANCER)
    if not balancers:
        return
    groups = _of_type(resources, SECURITY_GROUP)
    balancer_groups = [g for g in groups if any(_refers_to(ref, g) for lb in balancers
                                                for ref in lb.props.get("securityGroups") or [])]
    hosts = [i for i in _of_type(resources, INSTANCE) if i.tag(ROLE_TAG) == PRODUCTION_ROLE]
    for group in groups:
        if not any(_refers_to(ref, group) for h in hosts for ref in h.props.get("vpcSecurityGroupIds") or []):
            continue
        for rule in group.props.get("ingress") or []:
            cidrs = [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])]
            sources = rule.get("securityGroups") or []
            strangers = [s for s in sources if not any(_refers_to(s, g) for g in balancer_groups)]
            if cidrs or strangers or not sources:
                yield group, (
                    f"production host group {group.name} admits {cidrs + strangers or 'no named source'} on "
                    f"port {rule.get('fromPort')}; behind a load balancer only its security group may reach the hosts"
                )


STACK_RULES: tuple[StackRule, ...] = (
    StackRule("S20", "instance-roles-no-managed-policies", "No managed policy on an instance role unless allowed by ARN", s20_no_managed_policies_on_instance_roles),
    StackRule("S21", "developer-roles-no-secrets", "Developer roles: no Parameter Store reads, no KMS decrypt", s21_developer_roles_read_no_secrets),
    StackRule("S31", "hosts-only-behind-load-balancer", "Behind a load balancer, hosts admit only its security group", s31_hosts_only_behind_the_load_balancer),
    StackRule("S22", "production-reads-its-path", "The production role reads only its own parameter path", s22_production_reads_only_its_path),
    StackRule("S22", "app-parameters-key", "A CMK for app parameters that only the production role decrypts, via SSM", s22_app_parameters_key),
    StackRule("S24", "event-topics-cmk", "Topics EventBridge publishes to use a CMK that grants events.amazonaws.com", s24_event_topics_use_a_key_events_can_use),
    StackRule("S26", "repository-code-cannot-publish", "Roles of CodeBuild projects cannot write releases/", s26_repository_code_cannot_publish),
    StackRule("S25", "vpc-flow-logs", "Every VPC has flow logs", s25_vpcs_have_flow_logs),
    StackRule("S27", "ci-identities", "Pull-request identities only read; writing identities trust an environment", s27_ci_identities),
)


def stack_violations(resources: Sequence[StackResource], context: StackContext = StackContext()) -> list[Finding]:
    found: list[Finding] = []
    for rule in STACK_RULES:
        found += rule(resources, context)
    return found


def refs_of(props: Mapping[str, Any], *computed: Any) -> frozenset[str]:
    """The reference values of a resource: its id, name and ARN, and the id an ARN ends with."""
    values = [props.get("id"), props.get("name"), props.get("arn"), *computed]
    arn = props.get("arn")
    if isinstance(arn, str) and "/" in arn:
        values.append(arn.rsplit("/", 1)[1])  # vpc-..., key id, role name: what other resources hold
    return frozenset(v for v in values if isinstance(v, str) and v)
