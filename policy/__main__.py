"""devprod's CrossGuard pack: `pulumi preview --policy-pack policy`.

Constructing PolicyPack starts the analyzer's gRPC server and blocks, so it
happens here only; the rules live in importable modules.
"""

from pulumi_policy import PolicyPack

from policy.crossguard import policies

PolicyPack(name="devprod", policies=policies())
