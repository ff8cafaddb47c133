"""Network: a dedicated VPC with one public subnet per pinned zone, or an existing VPC."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping

import pulumi
import pulumi_aws as aws

from components.config import NetworkSpec
from components.common import apply_all, log_writes_statement, policy_document, tags_for


@dataclass(frozen=True)
class NetworkArgs:
    spec: NetworkSpec
    stack: str
    region: str
    account_id: pulumi.Input[str]
    tags: Mapping[str, str] = field(default_factory=dict)


def flow_log_trust_policy(region: str, account: str) -> str:
    """The flow-log service, for this account's flow logs only (S13)."""
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:ec2:{region}:{account}:vpc-flow-log/*"},
                },
            }
        ]
    )


def flow_log_delivery_statements(log_group_arn: str) -> list[dict]:
    """Write into the one flow-log group; DescribeLogGroups has no resource scope."""
    return [
        log_writes_statement("DeliverFlowLogs", log_group_arn, describe_streams=True),
        {"Sid": "FindTheGroup", "Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
    ]


class Network(pulumi.ComponentResource):
    """Public subnets and an internet gateway, no NAT gateway (boxes reach SSM outbound)."""

    vpc_id: pulumi.Output[str]
    subnet_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devprod:network:Network", name, None, opts)
        spec = args.spec
        if spec.existing:
            self.vpc_id = pulumi.Output.from_input(spec.vpc_id)
            self.subnet_ids = {z: pulumi.Output.from_input(s) for z, s in spec.subnet_ids.items()}
            self.register_outputs({"vpcId": self.vpc_id, "subnetIds": self.subnet_ids})
            return

        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=spec.cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags_for(args.tags, f"{name}-vpc"),
            opts=child,
        )
        # The default security group allows all traffic between its members;
        # adopting it with no rules closes that door (FSBP EC2.2).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags=tags_for(args.tags, f"{name}-default-sg"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=tags_for(args.tags, f"{name}-igw"), opts=child
        )
        table = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=tags_for(args.tags, f"{name}-public-rt"),
            opts=child,
        )
        # Subnet i is always the i-th /20 (or smaller) of the VPC: zones may be
        # appended to the list, never reordered, or boxes would move subnets.
        network = ipaddress.IPv4Network(spec.cidr)
        blocks = list(network.subnets(new_prefix=min(network.prefixlen + 4, 28)))
        self.subnet_ids = {}
        for index, zone in enumerate(spec.zones):
            subnet = aws.ec2.Subnet(
                f"{name}-subnet-{zone}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[index]),
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags=tags_for(args.tags, f"{name}-subnet-{zone}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-subnet-{zone}-rta", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )
            self.subnet_ids[zone] = subnet.id
        self._flow_logs(name, args, vpc)
        self.vpc_id = vpc.id
        self.register_outputs({"vpcId": self.vpc_id, "subnetIds": self.subnet_ids})

    def _flow_logs(self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc) -> None:
        """S25: the VPC's flow logs (rejected traffic by default) in a log group with retention."""
        settings = args.spec.flow_logs
        child = pulumi.ResourceOptions(parent=self)
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/devprod/{args.stack}/vpc-flow-logs/{name}",
            retention_in_days=settings.retention_days,
            tags=tags_for(args.tags, f"{name}-flow-logs"),
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            assume_role_policy=apply_all(lambda account: flow_log_trust_policy(args.region, account), args.account_id),
            description=f"VPC flow logs of {name} into its log group",
            tags=tags_for(args.tags, f"{name}-flow-logs-role"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=role.id,
            policy=group.arn.apply(lambda arn: policy_document(flow_log_delivery_statements(arn))),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type=settings.traffic.value,
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=600,
            tags=tags_for(args.tags, f"{name}-flow-log"),
            opts=child,
        )
