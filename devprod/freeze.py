"""Deploy freezes: the pipeline's transition into its Release stage, disabled with a reason and who, enabled again.

A frozen pipeline still runs Source and Test for every push; the newest
tested execution waits in front of Release and goes on when the freeze ends
(CodePipeline keeps only the newest waiting one). `devprod deploy` and
`rollback` do not go through the pipeline, so an emergency fix stays possible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from devprod.aws import doing
from devprod.errors import BadInput

# The pipeline stage that deploys; a freeze closes the way into it.
FROZEN_STAGE = "Release"
# What CodePipeline's DisableStageTransition accepts as a reason (its API model).
REASON_ALLOWED = re.compile(r"[a-zA-Z0-9!@ ().*?-]")
REASON_LIMIT = 300
ALLOWED_TEXT = "letters, digits, spaces and ! @ ( ) . * ? -"


@dataclass(frozen=True)
class Freeze:
    frozen: bool
    reason: Optional[str] = None
    changed_by: Optional[str] = None
    changed_at: Optional[str] = None

    def line(self) -> str:
        """One line for `devprod status`."""
        when = f" since {self.changed_at[:16].replace('T', ' ')} UTC" if self.changed_at else ""
        if self.frozen:
            return f"deploys: FROZEN{when}: {self.reason or '(no reason given)'}"
        return f"deploys: open ({FROZEN_STAGE} takes new executions; `devprod freeze` stops that)"


def who(sts: Any) -> str:
    """The caller, shortened to what a reason may hold: user name, or role and session name."""
    with doing("asking AWS who the caller is (sts get-caller-identity)"):
        arn = sts.get_caller_identity()["Arn"]
    resource = arn.split(":", 5)[-1]  # user/alice, assumed-role/Ops/alice@example.com, root
    parts = resource.split("/")[1:] or [resource]
    return "".join(c if REASON_ALLOWED.fullmatch(c) else "-" for c in " ".join(parts))[:100]


def reason_text(text: str, caller: str) -> str:
    """`TEXT (by CALLER)`, or BadInput naming --reason when CodePipeline could not store it."""
    text = text.strip()
    if not text:
        raise BadInput("--reason: say why deploys are frozen (it is shown by `devprod status`)")
    bad = sorted({c for c in text if not REASON_ALLOWED.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise BadInput(f"--reason {text!r}: CodePipeline takes only {ALLOWED_TEXT}, not {shown}")
    suffix = f" (by {caller})"
    if len(text) + len(suffix) > REASON_LIMIT:
        raise BadInput(f"--reason is {len(text)} characters; at most {REASON_LIMIT - len(suffix)} fit with '{suffix.strip()}'")
    return text + suffix


def state(codepipeline: Any, pipeline: str) -> Freeze:
    """Whether the way into the Release stage is closed, from the pipeline's own state."""
    with doing(f"reading the state of pipeline {pipeline}"):
        stages = codepipeline.get_pipeline_state(name=pipeline).get("stageStates", [])
    stage = next((s for s in stages if s.get("stageName") == FROZEN_STAGE), None)
    if stage is None:
        raise BadInput(f"--pipeline {pipeline}: it has no {FROZEN_STAGE} stage (not a devprod pipeline?)")
    transition = stage.get("inboundTransitionState") or {}
    changed_at = transition.get("lastChangedAt")
    if isinstance(changed_at, datetime):
        changed_at = changed_at.astimezone(timezone.utc).isoformat()
    return Freeze(
        frozen=transition.get("enabled", True) is False,
        reason=transition.get("disabledReason"),
        changed_by=transition.get("lastChangedBy"),
        changed_at=changed_at,
    )


def freeze(clients: Any, pipeline: str, text: str) -> tuple[bool, Freeze]:
    """Close the way into Release; (whether this call changed anything, the state after)."""
    reason_text(text, "")  # bad characters or no text: refused before AWS is asked anything
    reason = reason_text(text, who(clients.sts))
    before = state(clients.codepipeline, pipeline)
    if before.frozen:
        return False, before
    with doing(f"disabling the transition into {FROZEN_STAGE} of pipeline {pipeline}"):
        clients.codepipeline.disable_stage_transition(
            pipelineName=pipeline, stageName=FROZEN_STAGE, transitionType="Inbound", reason=reason
        )
    return True, state(clients.codepipeline, pipeline)


def unfreeze(clients: Any, pipeline: str) -> tuple[bool, Freeze]:
    before = state(clients.codepipeline, pipeline)
    if not before.frozen:
        return False, before
    with doing(f"enabling the transition into {FROZEN_STAGE} of pipeline {pipeline}"):
        clients.codepipeline.enable_stage_transition(
            pipelineName=pipeline, stageName=FROZEN_STAGE, transitionType="Inbound"
        )
    return True, state(clients.codepipeline, pipeline)
