"""Network: a dedicated VPC with one public subnet per pinned zone, or an existing VPC."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping

import pulumi
import pulumi_aws as aws

from components.config import NetworkSpec
from components.common import tags_for


@dataclass(frozen=True)
class NetworkArgs:
    spec: NetworkSpec
    tags: Mapping[str, str] = field(default_factory=dict)


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
        self.vpc_id = vpc.id
        self.register_outputs({"vpcId": self.vpc_id, "subnetIds": self.subnet_ids})
