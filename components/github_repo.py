"""GitHubWiring: the app repository's Actions variables, branch protection and deploy workflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_github as github

from components.common import read_text
from components.config import PipelineSettings

WORKFLOW_FILE = Path(__file__).resolve().parent.parent / "scripts" / "github" / "deploy.yml"
WORKFLOW_PATH = ".github/workflows/deploy.yml"
BRANCH_LINE = "    branches: [main]"


def workflow_text(branch: str) -> str:
    """The deploy workflow for `branch` (a validated plain branch name)."""
    text = read_text(WORKFLOW_FILE)
    if BRANCH_LINE not in text:
        raise ValueError(f"{WORKFLOW_FILE} lost its line {BRANCH_LINE.strip()!r}")
    return text.replace(BRANCH_LINE, f"    branches: [{branch}]", 1)


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
        github.RepositoryFile(
            f"{name}-deploy-workflow",
            repository=s.repo_name,
            branch=s.branch,
            file=WORKFLOW_PATH,
            content=workflow_text(s.branch),
            commit_message="devprod: deploy workflow (managed by Pulumi)",
            overwrite_on_create=True,
            opts=child,
        )
        self.register_outputs({})
