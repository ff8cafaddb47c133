"""GitHubWiring: the app repository's Actions variables, branch protection, deploy environment and deploy workflow.

The workflow never goes straight to the protected branch (branch protection
refuses that, admins included): each version is committed to a branch of its
own and proposed as a pull request, reviewed and merged like any change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_github as github

from components.common import read_text
from components.config import PipelineSettings

WORKFLOW_FILE = Path(__file__).resolve().parent.parent / "scripts" / "github" / "deploy.yml"
WORKFLOW_PATH = ".github/workflows/deploy.yml"
BRANCH_LINE = "    branches: [main]"
ENVIRONMENT_LINE = "    environment: production"
UPDATE_BRANCH_PREFIX = "devprod/workflow-update-"


def workflow_text(branch: str, environment: str = "production") -> str:
    """The deploy workflow for `branch`, its job in `environment` (both validated plain names)."""
    text = read_text(WORKFLOW_FILE)
    for line in (BRANCH_LINE, ENVIRONMENT_LINE):
        if text.count(line) != 1:
            raise ValueError(f"{WORKFLOW_FILE} must hold the line {line.strip()!r} exactly once")
    text = text.replace(BRANCH_LINE, f"    branches: [{branch}]", 1)
    return text.replace(ENVIRONMENT_LINE, f"    environment: {environment}", 1)


def update_branch(content: str) -> str:
    """One branch per workflow version: a new version opens a new pull request from a fresh branch."""
    return UPDATE_BRANCH_PREFIX + hashlib.sha256(content.encode()).hexdigest()[:12]


def pull_request_body(settings: PipelineSettings) -> str:
    return (
        f"devprod (`pulumi up` of its prod stack) proposes this version of `{WORKFLOW_PATH}`. "
        f"Review and merge it like any change; until then pushes to `{settings.branch}` keep deploying with "
        f"the version already merged. The deploy job runs in the `{settings.deploy_environment}` environment, "
        "the only one the AWS deploy role trusts. A newer devprod version opens a new pull request: "
        "close this one then. Edit the workflow in devprod (`scripts/github/deploy.yml`), not here."
    )


@dataclass(frozen=True)
class GitHubWiringArgs:
    settings: PipelineSettings
    region: str
    deploy_role_arn: pulumi.Input[str]
    pipeline_name: pulumi.Input[str]
    source_bucket: pulumi.Input[str]


class GitHubWiring(pulumi.ComponentResource):
    """Only true secrets would be Actions secrets; ARNs, names and the region are variables (S19)."""

    def __init__(self, name: str, args: GitHubWiringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:delivery:GitHubWiring", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        variables = {
            "AWS_REGION": args.region,
            "AWS_DEPLOY_ROLE_ARN": args.deploy_role_arn,
            "PIPELINE_NAME": args.pipeline_name,
            "SOURCE_BUCKET": args.source_bucket,
        }
        for key, value in variables.items():
            github.ActionsVariable(
                f"{name}-var-{key.lower().replace('_', '-')}",
                repository=s.repo_name,
                variable_name=key,
                value=value,
                opts=child,
            )
        github.BranchProtection(
            f"{name}-protect-{s.branch.replace('/', '-')}",
            repository_id=s.repo_name,
            pattern=s.branch,
            enforce_admins=True,
            allows_deletions=False,
            allows_force_pushes=False,
            required_pull_request_reviews=[{"required_approving_review_count": 1, "dismiss_stale_reviews": True}],
            required_status_checks=[{"strict": True, "contexts": [s.required_check]}],
            opts=child,
        )
        # Without a branch policy any branch's workflow could name the
        # environment and get the deploy role (S27). "Protected branches" would
        # admit every branch a protection rule matches (release/*, say): only
        # the deployed branch itself may run in this environment.
        environment = github.RepositoryEnvironment(
            f"{name}-environment-{s.deploy_environment}",
            repository=s.repo_name,
            environment=s.deploy_environment,
            can_admins_bypass=False,
            deployment_branch_policy={"protected_branches": False, "custom_branch_policies": True},
            opts=child,
        )
        github.RepositoryEnvironmentDeploymentPolicy(
            f"{name}-environment-{s.deploy_environment}-branch",
            repository=s.repo_name,
            environment=environment.environment,
            branch_pattern=s.branch,
            opts=child,
        )
        self._propose_workflow(name, s)
        self.register_outputs({})

    def _propose_workflow(self, name: str, s: PipelineSettings) -> None:
        """Branch, commit, pull request. Kept on delete: a superseded branch, commit or pull request is
        history (merged, or closed by a reviewer), and deleting the file would commit a deletion."""
        content = workflow_text(s.branch, s.deploy_environment)
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        branch = github.Branch(
            f"{name}-workflow-branch",
            repository=s.repo_name,
            branch=update_branch(content),
            source_branch=s.branch,
            opts=kept,
        )
        workflow = github.RepositoryFile(
            f"{name}-deploy-workflow",
            repository=s.repo_name,
            branch=branch.branch,
            file=WORKFLOW_PATH,
            content=content,
            commit_message="devprod: deploy workflow (managed by Pulumi, proposed for review)",
            overwrite_on_create=True,
            opts=kept,
        )
        github.RepositoryPullRequest(
            f"{name}-workflow-pr",
            base_repository=s.repo_name,
            base_ref=s.branch,
            head_ref=branch.branch,
            title="devprod: update the deploy workflow",
            body=pull_request_body(s),
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(depends_on=[workflow])),
        )
