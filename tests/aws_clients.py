"""boto3 clients for the tests against moto's server, and a client that sends
named operations to a Stubber-backed twin (for the calls moto lacks)."""

from __future__ import annotations

import boto3

REGION = "eu-central-1"


def client(service, aws_env):
    return boto3.client(service, endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def offline(service):
    """A client that never reaches a network, for Stubber."""
    return boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")


class Mixed:
    """A client whose named operations go to a stubbed twin; the rest to moto."""

    def __init__(self, real, stubbed, operations):
        self.real, self.stubbed, self.operations = real, stubbed, set(operations)

    def get_paginator(self, name):
        return (self.stubbed if name in self.operations else self.real).get_paginator(name)

    def __getattr__(self, name):
        return getattr(self.stubbed if name in self.operations else self.real, name)
