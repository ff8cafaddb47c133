"""ArtifactStore: the private, versioned, TLS-only bucket that carries sources and releases (S8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pulumi
import pulumi_aws as aws

from components.common import policy_document, tags_for
from policy.iam import tls_only_statement


RELEASES = "releases"


def bucket_policy_statements(arn: str, release_writer: str | None = None) -> list[dict[str, Any]]:
    """TLS only (S8); releases written once, only by the Release role, and never deleted (S26).

    S3 refuses a PutObject under releases/ that does not carry If-None-Match
    (which makes S3 itself refuse to replace an existing object), and every
    delete there, so a published release and its checksum never change: a
    rollback gets exactly what was tested. Multipart parts carry no
    If-None-Match, so releases go up in one request (up to 5 GiB). Only the
    Release role may write there at all: otherwise anyone allowed to write to
    the bucket could publish a commit's release before the pipeline does.
    """
    writer = (
        {"Condition": {"ArnNotEquals": {"aws:PrincipalArn": release_writer}}} if release_writer else {}
    )
    return [
        tls_only_statement(arn),
        {
            "Sid": "ReleasesAreWrittenOnce",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{arn}/{RELEASES}/*",
            "Condition": {"Null": {"s3:if-none-match": "true"}},
        },
        {
            "Sid": "OnlyTheReleaseActionPublishes",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{arn}/{RELEASES}/*",
            **writer,
        },
        {
            "Sid": "ReleasesAreNeverDeleted",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": f"{arn}/{RELEASES}/*",
        },
    ]


@dataclass(frozen=True)
class ArtifactStoreArgs:
    # The one principal that may publish releases (the pipeline's Release role);
    # None: nobody may write under releases/.
    release_writer_arn: pulumi.Input[str] | None = None
    # Noncurrent object versions (old sources, overwritten releases) expire after this.
    noncurrent_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)


class ArtifactStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ArtifactStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:storage:ArtifactStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            force_destroy=False,
            tags=tags_for(args.tags, f"{name}-bucket"),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=False),
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}, "bucket_key_enabled": True}],
            opts=child,
        )
        # Versioning lets the pipeline start on an exact source object version.
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-noncurrent-and-abort-uploads",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                }
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, args.release_writer_arn).apply(
                lambda a: policy_document(bucket_policy_statements(a[0], a[1]))
            ),
            opts=child,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name, "bucketArn": self.bucket_arn})
