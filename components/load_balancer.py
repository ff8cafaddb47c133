"""HttpsLoadBalancer: the internet-facing ALB in front of production's hosts (HTTPS only, 80 redirects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.common import tags_for

# TLS 1.3 and 1.2 only, forward-secret AEAD ciphers, post-quantum key exchange: the
# console's default since 2025-09 (API calls still default to ELBSecurityPolicy-2016-08).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
HTTPS_PORT = 443
HTTP_PORT = 80
# Two healthy answers bring a host in, two failures take it out (30 s at 15 s intervals).
HEALTH_INTERVAL_SECONDS = 15
HEALTH_THRESHOLD = 2


@dataclass(frozen=True)
class HttpsLoadBalancerArgs:
    stack: str
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    allowed_cidrs: Sequence[str]
    app_port: int
    health_path: str
    drain_seconds: int
    domain: str
    # Route 53 zone for the alias record and (without certificate_arn) the DNS validation.
    hosted_zone_id: str | None = None
    certificate_arn: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class HttpsLoadBalancer(pulumi.ComponentResource):
    """ALB over every network zone, a target group on the hosts' app port, 443 with TLS 1.2+, 80 -> 301."""

    security_group_id: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    arn_suffix: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]

    def __init__(self, name: str, args: HttpsLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:network:HttpsLoadBalancer", name, None, opts)
        self._name = name
        group = self._security_group(name, args)
        balancer = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            subnets=list(args.subnet_ids),
            security_groups=[group.id],
            # Requests with header names that are not valid HTTP never reach the app
            # (request smuggling through odd headers).
            drop_invalid_header_fields=True,
            enable_deletion_protection=True,
            tags=tags_for(args.tags, f"{name}-alb"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        target_group = self._target_group(name, args)
        certificate = self._certificate(name, args)
        self._listeners(name, balancer, target_group, certificate, args)
        if args.hosted_zone_id:
            aws.route53.Record(
                f"{name}-alias",
                zone_id=args.hosted_zone_id,
                name=args.domain,
                type="A",
                aliases=[{"name": balancer.dns_name, "zone_id": balancer.zone_id, "evaluate_target_health": True}],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.security_group_id = group.id
        self.dns_name = balancer.dns_name
        self.arn_suffix = balancer.arn_suffix
        self.target_group_arn = target_group.arn
        self.target_group_arn_suffix = target_group.arn_suffix
        self.register_outputs({"dnsName": self.dns_name, "targetGroupArn": self.target_group_arn})

    def attach(self, host_name: str, instance_id: pulumi.Input[str], port: int) -> aws.lb.TargetGroupAttachment:
        """One attachment per host, named after the host so adding a host touches no other."""
        return aws.lb.TargetGroupAttachment(
            f"{host_name}-target",
            target_group_arn=self.target_group_arn,
            target_id=instance_id,
            port=port,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _security_group(self, name: str, args: HttpsLoadBalancerArgs) -> aws.ec2.SecurityGroup:
        """443 and 80 (only to be redirected) from the allowed ranges; out only to the hosts' app port."""
        v4 = [c for c in args.allowed_cidrs if ":" not in c]
        v6 = [c for c in args.allowed_cidrs if ":" in c]
        ingress = [
            {"description": f"{what} from the allowed ranges", "protocol": "tcp", "from_port": port,
             "to_port": port, "cidr_blocks": v4, "ipv6_cidr_blocks": v6}
            for what, port in (("HTTPS", HTTPS_PORT), ("HTTP, redirected to HTTPS", HTTP_PORT))
        ]
        return aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="devprod production load balancer: HTTPS in, the app port out",
            vpc_id=args.vpc_id,
            ingress=ingress,
            # The hosts' group admits only this group; the ALB needs nothing else
            # out (a ranged rule naming the host group would make the groups a cycle).
            egress=[{"description": f"To the hosts' app port {args.app_port}", "protocol": "tcp",
                     "from_port": args.app_port, "to_port": args.app_port, "cidr_blocks": ["0.0.0.0/0"]}],
            tags=tags_for(args.tags, f"{name}-sg"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _target_group(self, name: str, args: HttpsLoadBalancerArgs) -> aws.lb.TargetGroup:
        """The hosts' nginx on the app port; healthy only on a 200 from the app's health path."""
        return aws.lb.TargetGroup(
            f"{name}-targets",
            port=args.app_port,
            protocol="HTTP",
            target_type="instance",
            vpc_id=args.vpc_id,
            # A host leaving (rollout, drain) finishes its requests for as long as a slot switch does.
            deregistration_delay=args.drain_seconds,
            health_check={
                "enabled": True,
                "protocol": "HTTP",
                "path": args.health_path,
                "port": "traffic-port",
                "matcher": "200",
                "interval": HEALTH_INTERVAL_SECONDS,
                "healthy_threshold": HEALTH_THRESHOLD,
                "unhealthy_threshold": HEALTH_THRESHOLD,
            },
            tags=tags_for(args.tags, f"{name}-targets"),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _certificate(self, name: str, args: HttpsLoadBalancerArgs) -> pulumi.Input[str]:
        """The configured certificate, or one ACM issues once its DNS validation records exist."""
        if args.certificate_arn:
            return args.certificate_arn
        assert args.hosted_zone_id, "config validation: domain needs hostedZoneId or certificateArn"
        child = pulumi.ResourceOptions(parent=self)
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=args.domain,
            validation_method="DNS",
            tags=tags_for(args.tags, f"{name}-certificate"),
            opts=child,
        )
        # One domain name: exactly one validation record.
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-certificate-validation-record",
            zone_id=args.hosted_zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate-validation",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[record.fqdn],
            opts=child,
        )
        return validation.certificate_arn

    def _listeners(self, name: str, balancer: aws.lb.LoadBalancer, target_group: aws.lb.TargetGroup,
                   certificate: pulumi.Input[str], args: HttpsLoadBalancerArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=balancer.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=certificate,
            default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            tags=tags_for(args.tags, f"{name}-https"),
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-http-redirect",
            load_balancer_arn=balancer.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=[{"type": "redirect", "redirect": {
                "protocol": "HTTPS", "port": str(HTTPS_PORT), "status_code": "HTTP_301"}}],
            tags=tags_for(args.tags, f"{name}-http-redirect"),
            opts=child,
        )


def target_group_statements(target_group_arn: str | None) -> list[dict[str, Any]]:
    """A rolling deploy takes each batch out of this stack's target group, and puts it back,
    while it switches (devprod.rollout); no other target group, and no listener or rule. It
    follows the drain with DescribeTargetHealth, which each policy grants once on its own
    (IAM offers no resource scope for it)."""
    if not target_group_arn:
        return []
    return [
        {"Sid": "RollHostsThroughTheBalancer", "Effect": "Allow",
         "Action": ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"],
         "Resource": target_group_arn},
    ]
