"""devprod's CrossGuard pack: `pulumi preview --policy-pack policy`.

Constructing PolicyPack starts the analyzer's gRPC server and blocks, so it
happens here only; the rules live in importable modules.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack  # noqa: E402

from policy.crossguard import policies  # noqa: E402

PolicyPack(name="devprod", policies=policies())
