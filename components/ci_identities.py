"""CiIdentities: this infrastructure repository's GitHub Actions roles, each trusting exactly one subject (S27).

Pull-request previews get a read-only role; `pulumi up` of each stack gets a
role that only that stack's GitHub environment can assume; the nightly drift
check gets a read-only role behind its own environment. The policies are pure
functions of the settings, so tests read them without the Pulumi runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.common import (
    GITHUB_ISSUER,
    github_oidc_trust,
    github_subject,
    managed_policy_child_name,
    policy_document,
    tags_for,
)
from components.config import CI_STACK, CI_UP_ENVIRONMENTS, CiSettings
from devprod.contracts import STACK_TAG

# The only stack a pull request may preview live. Pulumi's awskms secrets
# provider decrypts the stack's data key before it reads any state, so a live
# preview needs kms:Decrypt; dev holds no production secret, prod does (or may,
# once someone runs `pulumi config set --secret`). Pull requests review prod
# through the offline `devprod plan --diff` only; its live diff prints in the
# approved `production` job as `up` runs.
PREVIEW_STACK = "dev"
DRIFT_ENVIRONMENT = "drift"
SESSION_SECONDS = 3600  # S15
POWER_USER = "arn:aws:iam::aws:policy/PowerUserAccess"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"

# The Actions variables the workflows read (S19: ARNs and names are variables, never secrets).
PREVIEW_ROLE_VARIABLE = "DEVPROD_PREVIEW_ROLE_ARN"
DRIFT_ROLE_VARIABLE = "DEVPROD_DRIFT_ROLE_ARN"


def up_role_variable(stack: str) -> str:
    return f"DEVPROD_{stack.upper()}_UP_ROLE_ARN"


# What `pulumi up` does to IAM for these stacks: roles with inline policies and
# attachments, instance profiles (no customer-managed policies, no users); the
# prod stack also owns the GitHub provider.
IAM_ACTIONS = (
    "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
    "iam:UpdateAssumeRolePolicy", "iam:TagRole", "iam:UntagRole", "iam:ListRoleTags",
    "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies",
    "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies", "iam:PassRole",
    "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:GetInstanceProfile",
    "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:ListInstanceProfilesForRole",
    "iam:TagInstanceProfile", "iam:UntagInstanceProfile",
)
OIDC_PROVIDER_ACTIONS = (
    "iam:CreateOpenIDConnectProvider", "iam:DeleteOpenIDConnectProvider", "iam:GetOpenIDConnectProvider",
    "iam:UpdateOpenIDConnectProviderThumbprint", "iam:AddClientIDToOpenIDConnectProvider",
    "iam:RemoveClientIDFromOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
    "iam:UntagOpenIDConnectProvider",
)
# Bucket settings that keep the state recoverable; `pulumi up` never changes them.
STATE_BUCKET_GUARDS = (
    "s3:DeleteBucket", "s3:DeleteBucketPolicy", "s3:PutBucketPolicy", "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration", "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketAcl", "s3:PutBucketOwnershipControls", "s3:DeleteObjectVersion",
)
SECRETS_KEY_USE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")
AUDIT_TRAIL_CHANGES = ("cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail", "cloudtrail:PutEventSelectors")
PARAMETER_READS = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory")


@dataclass(frozen=True)
class StateBackend:
    """Where Pulumi's DIY backend keeps a project's stacks in S3 (the project-scoped layout)."""

    bucket: str
    project: str

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def meta(self) -> str:
        return f"{self.bucket_arn}/.pulumi/meta.yaml"

    def checkpoint(self, stack: str) -> str:
        # <stack>.json, plus the .json.bak / .json.gz Pulumi may write beside it.
        return f"{self.bucket_arn}/.pulumi/stacks/{self.project}/{stack}.*"

    def stack_objects(self, stack: str) -> list[str]:
        """Every object `pulumi up` of `stack` reads or writes: checkpoint, history, backups, lock."""
        root = f"{self.bucket_arn}/.pulumi"
        return [
            self.checkpoint(stack),
            f"{root}/history/{self.project}/{stack}/*",
            f"{root}/backups/{self.project}/{stack}/*",
            f"{root}/locks/organization/{self.project}/{stack}/*",
        ]


def public_parameters(region: str) -> str:
    """AWS's public parameters (AMI ids) that the program looks up.

    Their ARNs have no account; '*' matches that, and accounts cannot create
    parameters under /aws/ themselves.
    """
    return f"arn:aws:ssm:{region}:*:parameter/aws/service/*"


def preview_statements(backend: StateBackend, secrets_key: str, region: str) -> list[dict[str, Any]]:
    """`pulumi preview` (no --refresh) of PREVIEW_STACK: its checkpoint, its key, the program's lookups."""
    return [
        # Key names only; the stack files themselves stay unreadable.
        {"Sid": "ListState", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": backend.bucket_arn},
        {
            "Sid": "ReadPreviewedState",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [backend.meta, backend.checkpoint(PREVIEW_STACK)],
        },
        {"Sid": "DecryptPreviewedSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": secrets_key},
        {
            "Sid": "ReadPublicAmiParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters"],
            "Resource": public_parameters(region),
        },
    ]


def drift_statements(backend: StateBackend, secrets_keys: Mapping[str, str], region: str) -> list[dict[str, Any]]:
    """`pulumi refresh --preview-only` of every stack, beside ReadOnlyAccess; data reads stay denied."""
    stacks = sorted(secrets_keys)
    return [
        {"Sid": "ListState", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": backend.bucket_arn},
        {
            "Sid": "ReadState",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [backend.meta, *[backend.checkpoint(s) for s in stacks]],
        },
        {
            "Sid": "DecryptStackSecrets",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": [secrets_keys[s] for s in stacks],
        },
        # ReadOnlyAccess reads data too (objects, parameters, logs): refresh needs
        # only configuration, so the data stays out of reach.
        {
            "Sid": "NoObjectData",
            "Effect": "Deny",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "NotResource": f"{backend.bucket_arn}/.pulumi/*",
        },
        {
            "Sid": "NoParameterValues",
            "Effect": "Deny",
            "Action": list(PARAMETER_READS),
            "NotResource": public_parameters(region),
        },
        {
            "Sid": "NoSecretsOrLogData",
            "Effect": "Deny",
            "Action": ["secretsmanager:GetSecretValue", "logs:GetLogEvents", "logs:FilterLogEvents", "logs:StartQuery"],
            "Resource": "*",
        },
    ]


def up_iam_statement(account: str, manages_provider: bool) -> dict[str, Any]:
    """IAM is outside PowerUserAccess: the role, profile and policy actions `pulumi up` needs, in this account."""
    resources = [f"arn:aws:iam::{account}:{kind}/*" for kind in ("role", "instance-profile")]
    actions = list(IAM_ACTIONS)
    if manages_provider:
        actions += OIDC_PROVIDER_ACTIONS
        resources.append(f"arn:aws:iam::{account}:oidc-provider/{GITHUB_ISSUER}")
    return {"Sid": "ManageStackIam", "Effect": "Allow", "Action": actions, "Resource": resources}


def up_state_statements(stack: str, backend: StateBackend, secrets_keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Only this stack's checkpoint and key; the state's history and bucket settings stay as they are."""
    others = sorted(s for s in secrets_keys if s != stack)
    statements = [
        {
            "Sid": "StateHistoryStays",
            "Effect": "Deny",
            "Action": list(STATE_BUCKET_GUARDS),
            "Resource": [backend.bucket_arn, f"{backend.bucket_arn}/*"],
        },
        # Deny everything but use: nobody's CI disables or re-keys a secrets key.
        {
            "Sid": "SecretsKeyUseOnly",
            "Effect": "Deny",
            "NotAction": list(SECRETS_KEY_USE),
            "Resource": secrets_keys[stack],
        },
    ]
    if others:
        statements += [
            {
                "Sid": "NoOtherStacksState",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": [obj for other in others for obj in backend.stack_objects(other)],
            },
            {
                "Sid": "NoOtherStacksSecrets",
                "Effect": "Deny",
                "Action": "kms:*",
                "Resource": [secrets_keys[o] for o in others],
            },
        ]
    return statements


def up_isolation_statements(
    stack: str, others: Sequence[str], account: str, region: str, other_buckets: Sequence[str]
) -> list[dict[str, Any]]:
    """What PowerUserAccess would otherwise allow across stacks: tagged resources, named paths, role hopping."""
    tag = f"aws:ResourceTag/{STACK_TAG}"
    request_tag = f"aws:RequestTag/{STACK_TAG}"
    named = [
        arn
        for other in others
        for arn in (
            f"arn:aws:ssm:{region}:{account}:parameter/devprod/{other}/*",
            f"arn:aws:logs:{region}:{account}:log-group:/devprod/{other}/*",
        )
    ]
    named += [arn for bucket in other_buckets for arn in (bucket, f"{bucket}/*")]
    statements = [
        {"Sid": "NoOtherStacksResources", "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"StringNotEquals": {tag: stack}, "Null": {tag: "false"}}},
        {"Sid": "NoResourcesTaggedForOtherStacks", "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"StringNotEquals": {request_tag: stack}, "Null": {request_tag: "false"}}},
        # A new role is not tagged for another stack; assuming one would shed these denies.
        {"Sid": "NoRoleChaining", "Effect": "Deny", "Action": "sts:AssumeRole", "Resource": "*"},
        {"Sid": "AuditTrailStays", "Effect": "Deny", "Action": list(AUDIT_TRAIL_CHANGES), "Resource": "*"},
    ]
    if named:
        # Parameters, log groups and buckets that tag conditions do not guard.
        statements.insert(2, {"Sid": "NoOtherStacksNamedResources", "Effect": "Deny", "Action": "*", "Resource": named})
    return statements


def up_statements(
    stack: str,
    *,
    backend: StateBackend,
    secrets_keys: Mapping[str, str],
    account: str,
    region: str,
    other_buckets: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The inline policy of `stack`'s up role, beside PowerUserAccess."""
    others = sorted(s for s in secrets_keys if s != stack)
    return [
        up_iam_statement(account, manages_provider=stack == CI_STACK),
        *up_state_statements(stack, backend, secrets_keys),
        *up_isolation_statements(stack, others, account, region, other_buckets),
    ]


@dataclass(frozen=True)
class CiIdentitiesArgs:
    settings: CiSettings
    project: str
    region: str
    account_id: pulumi.Input[str]
    # The account's GitHub OIDC provider when it exists or another component
    # creates it (an account has one); None: this component creates it.
    oidc_provider_arn: pulumi.Input[str] | None = None
    # Per stack, buckets no other stack's up role may touch: S3 does not apply
    # tag conditions to buckets, so they are denied by ARN.
    stack_buckets: Mapping[str, Sequence[pulumi.Input[str]]] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


class CiIdentities(pulumi.ComponentResource):
    provider_arn: pulumi.Output[str]
    preview_role_arn: pulumi.Output[str]
    drift_role_arn: pulumi.Output[str]
    up_role_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: CiIdentitiesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:delivery:CiIdentities", name, None, opts)
        s = args.settings
        backend = StateBackend(s.state_bucket, args.project)
        self.provider_arn = self._github_provider(name, args)
        self.preview_role_arn = self._ci_role(
            name, "preview", github_subject(s.repository, pull_request=True), args,
            pulumi.Output.from_input(preview_statements(backend, s.secrets_keys[PREVIEW_STACK], args.region)),
        )
        self.drift_role_arn = self._ci_role(
            name, "drift", github_subject(s.repository, environment=DRIFT_ENVIRONMENT), args,
            pulumi.Output.from_input(drift_statements(backend, s.secrets_keys, args.region)), managed=(READ_ONLY,),
        )
        self.up_role_arns = {
            stack: self._ci_role(
                name, f"up-{stack}", github_subject(s.repository, environment=environment), args,
                self._up_policy(stack, backend, args), managed=(POWER_USER,),
            )
            for stack, environment in CI_UP_ENVIRONMENTS.items()
        }
        self.register_outputs(
            {
                "providerArn": self.provider_arn,
                "previewRoleArn": self.preview_role_arn,
                "driftRoleArn": self.drift_role_arn,
                "upRoleArns": self.up_role_arns,
            }
        )

    def _github_provider(self, name: str, args: CiIdentitiesArgs) -> pulumi.Output[str]:
        if args.oidc_provider_arn is not None:
            return pulumi.Output.from_input(args.oidc_provider_arn)
        provider = aws.iam.OpenIdConnectProvider(
            f"{name}-github-oidc",
            url=f"https://{GITHUB_ISSUER}",
            client_id_lists=["sts.amazonaws.com"],
            tags=tags_for(args.tags, f"{name}-github-oidc"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return provider.arn

    @staticmethod
    def _up_policy(stack: str, backend: StateBackend, args: CiIdentitiesArgs) -> pulumi.Output[list[dict[str, Any]]]:
        others = [b for other, buckets in args.stack_buckets.items() if other != stack for b in buckets]
        return pulumi.Output.all(args.account_id, *others).apply(
            lambda a: up_statements(
                stack, backend=backend, secrets_keys=args.settings.secrets_keys,
                account=a[0], region=args.region, other_buckets=a[1:],
            )
        )

    def _ci_role(
        self,
        name: str,
        purpose: str,
        subject: str,
        args: CiIdentitiesArgs,
        statements: pulumi.Output[list[dict[str, Any]]],
        managed: tuple[str, ...] = (),
    ) -> pulumi.Output[str]:
        """`{name}-{purpose}-role`: trusts `subject` only, sessions of at most an hour (S14, S15)."""
        child = pulumi.ResourceOptions(parent=self)
        logical = f"{name}-{purpose}-role"
        role = aws.iam.Role(
            logical,
            assume_role_policy=self.provider_arn.apply(lambda arn: github_oidc_trust(arn, subject)),
            max_session_duration=SESSION_SECONDS,
            description=f"devprod CI ({purpose}): GitHub Actions {subject}",
            tags=tags_for(args.tags, logical, **{"devprod:ci-role": purpose}),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-{purpose}-policy", role=role.id, policy=statements.apply(policy_document), opts=child
        )
        for arn in managed:
            aws.iam.RolePolicyAttachment(
                managed_policy_child_name(f"{name}-{purpose}", arn), role=role.name, policy_arn=arn, opts=child
            )
        return role.arn


def actions_variables(
    region: str, state_bucket: str, ci: CiIdentities, app_repository: str | None = None
) -> dict[str, pulumi.Input[str]]:
    """The repository variables the workflows read, named once here (tests check the workflows against them)."""
    variables: dict[str, pulumi.Input[str]] = {
        "AWS_REGION": region,
        # The state bucket is assumed to be in the stack's region (as `devprod bootstrap` creates it).
        "PULUMI_BACKEND_URL": f"s3://{state_bucket}?region={region}",
        PREVIEW_ROLE_VARIABLE: ci.preview_role_arn,
        DRIFT_ROLE_VARIABLE: ci.drift_role_arn,
        **{up_role_variable(stack): arn for stack, arn in ci.up_role_arns.items()},
    }
    if app_repository is not None:
        # The GitHub App token for pulumi-github is scoped to the app repository alone.
        owner, name = app_repository.split("/", 1)
        variables |= {"DEVPROD_APP_OWNER": owner, "DEVPROD_APP_REPOSITORY": name}
    return variables
