"""ProductionService and its deploy document under mocks: S4, S9, S17, S18, R1, R4."""

from __future__ import annotations

import json

import pytest

from components.config import ConfigError, parse_stack_config
from tests.component_plans import BUCKET, BUCKET_ARN, service_plan
from tests.conftest import ROOT, plan_of

# CI roles carry AWS-managed policies by design (PowerUserAccess, ReadOnlyAccess:
# components/ci_identities.py); no other role in the stacks has one.
CI = "devprod:delivery:CiIdentities$"


@pytest.fixture(scope="module")
def service(prod_raw_once):
    """ProductionService alone, from the suite's prod config."""
    return service_plan(prod_raw_once)


@pytest.fixture(scope="module")
def prod_raw_once():
    from devprod.plan import load_stack_raw
    from tests.conftest import STACKS

    return load_stack_raw(STACKS, "prod")[0]


def document(plan) -> dict:
    return json.loads(plan.named("production-deploy").inputs["content"])


def test_s4_no_key_pair_no_ssh_only_the_app_port(service):
    host = service.named("production-host")
    assert "keyName" not in host.inputs, host.urn
    group = service.named("production-sg")
    (rule,) = group.inputs["ingress"]
    assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 8000, 8000), group.urn
    assert rule["cidrBlocks"] == ["0.0.0.0/0"] and rule["description"]
    for g in service.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for r in g.inputs.get("ingress", []):
            assert not (r["fromPort"] <= 22 <= r["toPort"]), g.urn


def test_s1_s2_r4_host_hardening(service):
    host = service.named("production-host")
    assert host.inputs["metadataOptions"]["httpTokens"] == "required"
    assert host.inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert host.inputs["rootBlockDevice"]["encrypted"] is True
    assert host.inputs["disableApiTermination"] is True, host.urn
    tags = host.inputs["tags"]
    assert tags["devprod:stack"] == "prod" and tags["devprod:role"] == "production"


def test_r1_ami_resolved_once_unless_config_names_one(service, prod_raw):
    host = service.named("production-host")
    assert host.options["ignoreChanges"] == ["ami", "userData"]
    prod_raw["devprod:production"]["ami"] = "ami-0123456789abcdef0"
    pinned = service_plan(prod_raw).named("production-host")
    assert pinned.inputs["ami"] == "ami-0123456789abcdef0" and pinned.options["ignoreChanges"] == ["userData"]


def test_s9_deploy_log_group_has_retention(service):
    for group in service.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs.get("retentionInDays") == 30, group.urn


def test_s17_instance_role_reads_only_its_releases_and_parameters(service):
    policy = json.loads(service.named("production-access").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["ReadReleases"]["Action"] == "s3:GetObject"
    assert by_sid["ReadReleases"]["Resource"] == f"{BUCKET_ARN}/releases/*"
    assert by_sid["ReadOwnParameters"]["Resource"] == [
        "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app",
        "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app/*",
    ]
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Sid"] == "PublishProxyMetrics":
            # No resource scope exists for PutMetricData: this stack's namespace, from its host, is the limit.
            assert statement["Condition"]["StringEquals"] == {"cloudwatch:namespace": "devprod/Proxy/prod"}
            assert set(statement["Condition"]["ArnEquals"]) == {"ec2:SourceInstanceARN"}
            continue
        assert "*" not in resources
    host_arn = service.named("production-host").computed["arn"]
    assert by_sid["ReadOwnParameters"]["Condition"] == {"ArnEquals": {"ec2:SourceInstanceARN": host_arn}}
    assert by_sid["DecryptOwnParameters"]["Resource"] == service.named("production-parameters-key").computed["arn"]
    assert by_sid["DecryptOwnParameters"]["Condition"] == {"StringEquals": {"kms:ViaService": "ssm.eu-central-1.amazonaws.com"}}
    assert [a for a in service.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if CI not in a.urn] == []


@pytest.mark.parametrize("plan_name", ["dev_plan", "prod_plan"])
def test_s20_every_instance_role_has_only_the_agents_own_policy(request, plan_name):
    plan = request.getfixturevalue(plan_name)
    roles = [r for r in plan.of_type("aws:iam/role:Role") if "ec2.amazonaws.com" in r.inputs["assumeRolePolicy"]]
    assert roles
    for role in roles:
        agent = plan.named(role.name.removesuffix("-role") + "-ssm-agent")
        statements = json.loads(agent.inputs["policy"])["Statement"]
        actions = sorted(a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
        assert actions == sorted(
            ["ssm:UpdateInstanceInformation"]
            + [f"ssmmessages:{v}{c}Channel" for v in ("Create", "Open") for c in ("Control", "Data")]
            + [f"ec2messages:{a}" for a in ("AcknowledgeMessage", "DeleteMessage", "FailMessage", "GetEndpoint", "GetMessages", "SendReply")]
        ), agent.urn
        assert statements[0]["Resource"] == "arn:aws:ec2:eu-central-1:123456789012:instance/*"
    assert [a for a in plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if CI not in a.urn] == []


def test_s22_app_parameters_key_lets_only_production_decrypt_through_ssm(service):
    key = service.named("production-parameters-key")
    assert key.inputs["enableKeyRotation"] is True and key.inputs["tags"]["devprod:purpose"] == "app-parameters"
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    decrypt = statements["OnlyProductionReadsAppSecrets"]
    assert decrypt["Principal"] == {"AWS": service.named("production-role").computed["arn"]}
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "ssm.eu-central-1.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app/*"},
    }
    admin = statements["AccountAdministersTheKey"]["Action"]
    assert not [a for a in admin if a.split(":")[1].startswith(("Decrypt", "Encrypt", "GenerateDataKey", "ReEncrypt", "CreateGrant"))]
    alias = service.named("production-parameters-key-alias").inputs
    assert alias["name"] == "alias/devprod-prod-app-parameters"


def test_stack_exports_the_parameters_key_alias(prod_plan):
    assert prod_plan.outputs["production"]["parametersKeyAlias"] == "alias/devprod-prod-app-parameters"


def test_account_id_pins_the_plan_and_refuses_another_account(prod_raw):
    from components.program import WrongAccountError, require_account

    prod_raw["devprod:accountId"] = "111122223333"
    plan = plan_of(prod_raw)
    assert plan.named("production-role").computed["arn"].startswith("arn:aws:iam::111122223333:")
    with pytest.raises(WrongAccountError) as caught:
        plan_of(prod_raw, account="444455556666")
    assert str(caught.value) == (
        "devprod:accountId is 111122223333, but the AWS credentials are for account 444455556666; "
        "nothing was changed (switch AWS_PROFILE or credentials)"
    )
    assert require_account(None) is None


def test_s18_document_schema_parameters_and_env_var_interpolation(service):
    resource = service.named("production-deploy")
    assert resource.inputs["documentType"] == "Command" and resource.inputs["documentFormat"] == "JSON"
    doc = document(service)
    assert doc["schemaVersion"] == "2.2"
    assert set(doc["parameters"]) == {"release", "action", "checksum"}
    assert doc["parameters"]["checksum"]["allowedPattern"] == "^([0-9a-f]{64})?$"
    for name, parameter in doc["parameters"].items():
        assert parameter["allowedPattern"], name
        assert parameter["interpolationType"] == "ENV_VAR", name
    (step,) = doc["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    text = "\n".join(step["inputs"]["runCommand"])
    assert "{{" not in text, "parameters must never be pasted into shell text"


def test_document_carries_deploy_sh_byte_for_byte(service):
    commands = document(service)["mainSteps"][0]["inputs"]["runCommand"]
    opener = commands.index("exec bash -s <<'DEVPROD_DEPLOY_SH'")
    assert commands[opener + 2] == "DEVPROD_DEPLOY_SH" and commands[-1] == "DEVPROD_DEPLOY_SH"
    assert commands[opener + 1] + "\n" == (ROOT / "scripts" / "deploy.sh").read_text()


def test_document_settings_come_from_config(service):
    commands = document(service)["mainSteps"][0]["inputs"]["runCommand"]
    assert "export HEALTH_URL=http://127.0.0.1:8000/health" in commands
    assert f"export ARTIFACT_BUCKET={BUCKET}" in commands
    assert "export INSTALL_COMMAND='npm ci --omit=dev'" in commands
    assert "export PARAMETER_PATH=/devprod/prod/app/" in commands
    assert "export KEEP_RELEASES=5" in commands
    assert "export UNIT_DIR=/etc/systemd/system" in commands and "export APP_START_COMMAND='node server.js'" in commands
    # The proxy and the slots: nginx on the public port, the slots on loopback ports of their own.
    for line in ("export HEALTH_PATH=/health", "export BLUE_PORT=8001", "export GREEN_PORT=8002",
                 "export PROXY_LISTEN='8000 [::]:8000'", "export MAX_BODY_MB=10", "export PROXY_TIMEOUT=60",
                 "export DRAIN_TIMEOUT=30", "export NGINX_SITE=/etc/nginx/conf.d/devprod.conf",
                 "export NGINX_UPSTREAM=/etc/nginx/devprod/upstream.conf"):
        assert line in commands, line


def test_proxy_settings_come_from_config(prod_raw):
    prod_raw["devprod:production"].update(
        {"port": 9000, "maxBodyMegabytes": 64, "proxyTimeoutSeconds": 300, "drainTimeoutSeconds": 120, "slotPorts": [9101, 9102]})
    commands = document(service_plan(prod_raw))["mainSteps"][0]["inputs"]["runCommand"]
    for line in ("export PROXY_LISTEN='9000 [::]:9000'", "export MAX_BODY_MB=64", "export PROXY_TIMEOUT=300",
                 "export DRAIN_TIMEOUT=120", "export BLUE_PORT=9101", "export GREEN_PORT=9102",
                 "export HEALTH_URL=http://127.0.0.1:9000/health"):
        assert line in commands, line


def test_s8_artifact_bucket_is_private_versioned_encrypted_tls_only(prod_plan):
    block = prod_plan.named("artifacts-public-access").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    assert prod_plan.named("artifacts-ownership").inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    assert prod_plan.named("artifacts-versioning").inputs["versioningConfiguration"]["status"] == "Enabled"
    sse = prod_plan.named("artifacts-encryption").inputs["rules"][0]
    assert sse["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
    (rule,) = prod_plan.named("artifacts-lifecycle").inputs["rules"]
    assert rule["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    assert rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7
    deny = json.loads(prod_plan.named("artifacts-tls-only").inputs["policy"])["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_recovery_alarm_and_user_data(service):
    alarm = service.named("production-auto-recover").inputs
    assert alarm["metricName"] == "StatusCheckFailed_System"
    assert alarm["alarmActions"] == ["arn:aws:automate:eu-central-1:ec2:recover"]
    user_data = service.named("production-host").inputs["userData"]
    assert "START_COMMAND='node server.js'" in user_data and "RUNTIME=node20" in user_data
    assert len(user_data.encode()) < 16384


def test_outputs(prod_plan):
    out = prod_plan.outputs["production"]
    assert out["healthUrl"] == "http://computed-eip-production-eip:8000/health"
    assert out["logGroupName"] == "/devprod/prod/deploy" and out["parameterPath"] == "/devprod/prod/app/"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("startCommand", "node server.js; curl evil", "must be one line"),
        ("installCommand", "npm ci $(whoami)", "must be one line"),
        ("port", 3389, "admin port"),
        ("port", 80, "greater than or equal to 1024"),
        ("healthPath", "health", "is not a URL path"),
        ("allowedCidrs", ["10.0.0.1/8"], "has host bits set"),
        ("runtime", "ruby", "node20"),
        ("ami", "ubuntu", "is not an AMI id"),
        ("logRetentionDays", 10, "is not a CloudWatch Logs retention"),
        ("keyName", "ops", "unknown key"),
        ("maxBodyMegabytes", 0, "greater than or equal to 1"),
        ("drainTimeoutSeconds", 0, "greater than or equal to 1"),
        ("proxyTimeoutSeconds", 7200, "less than or equal to 3600"),
        ("slotPorts", [8000, 8002], "neither of them port 8000"),
        ("slotPorts", [8001, 8001], "two different ports"),
        ("slotPorts", [80, 8002], "from 1024 to 65535"),
    ],
)
def test_bad_production_config(prod_raw, key, value, expected):
    prod_raw["devprod:production"][key] = value
    with pytest.raises(ConfigError) as info:
        parse_stack_config(prod_raw, project="devprod", stack="prod")
    (problem,) = info.value.problems
    assert problem.startswith("production") and expected in problem, problem


# ------------------------------------------------------------------ S29: operators' policy


@pytest.fixture(scope="module")
def operators(prod_plan_module):
    policy = prod_plan_module.named("production-operators")
    return policy, json.loads(policy.inputs["policy"])


@pytest.fixture(scope="module")
def prod_plan_module(prod_raw_once):
    return plan_of(prod_raw_once, stack="prod")


PROD_HOST_TAGS = {"devprod:role": "production", "devprod:stack": "prod"}
HOST = "production-host-computed"


def _context(tags):
    from tests.test_developer_instance import ALICE_CALLER

    return {**ALICE_CALLER, **{f"ssm:resourceTag/{k}": v for k, v in tags.items()}}


def _arn(instance_id):
    return f"arn:aws:ec2:eu-central-1:123456789012:instance/{instance_id}"


def test_s29_operators_may_open_sessions_and_deploy_on_production(operators, prod_plan_module):
    from tests.test_developer_instance import allowed

    policy, doc = operators
    host = _arn(HOST)  # the mocks' instance ARN of production-host
    context = _context(PROD_HOST_TAGS)
    assert allowed(doc, "ssm:StartSession", host, context)
    assert allowed(doc, "ssm:SendCommand", host, context)
    deploy_arn = next(s["Resource"][0] for s in doc["Statement"] if s["Sid"] == "SendDeployDocumentToProduction")
    assert ":document/production-deploy" in deploy_arn and allowed(doc, "ssm:SendCommand", deploy_arn, context)
    assert allowed(doc, "ssm:StartSession", "arn:aws:ssm:eu-central-1:123456789012:document/SSM-SessionManagerRunShell", context)
    log = next(s for s in doc["Statement"] if s["Sid"] == "ReadDeployLog")["Resource"][1]
    assert allowed(doc, "logs:GetLogEvents", log.replace("*", "cmd-1/i-1/aws-runShellScript/stderr"), context)
    assert policy.inputs["tags"]["devprod:operators-of"] == "prod"
    assert prod_plan_module.outputs["production"]["operatorPolicyArn"].startswith("arn:aws:iam:")


@pytest.mark.parametrize(
    "instance_id, tags",
    [("i-computed-alice-box", {"devprod:role": "developer", "devprod:developer": "alice", "devprod:stack": "dev"}),
     (HOST, {"devprod:role": "developer", "devprod:stack": "prod"}),
     (HOST, {"devprod:role": "production", "devprod:stack": "staging"})],
    ids=["a-dev-box", "host-not-tagged-production", "another-stacks-production"],
)
def test_s29_operators_may_not_touch_dev_boxes_or_run_other_documents(operators, instance_id, tags):
    from tests.test_developer_instance import allowed

    _, doc = operators
    context = _context(tags)
    for action in ("ssm:StartSession", "ssm:SendCommand", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"):
        assert not allowed(doc, action, _arn(instance_id), context), f"{action} on {instance_id} {tags}"
    prod = _context(PROD_HOST_TAGS)
    assert not allowed(doc, "ssm:SendCommand", "arn:aws:ssm:eu-central-1::document/AWS-RunShellScript", prod)
    assert not allowed(doc, "ssm:StartSession", "arn:aws:ssm:eu-central-1::document/AWS-StartPortForwardingSessionToRemoteHost", prod)
    assert not allowed(doc, "ssm:GetParameter", "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod/app/DB", prod)


@pytest.mark.parametrize(
    "index, changes, message",
    [
        (0, {"Resource": "arn:aws:ec2:eu-central-1:123456789012:instance/*"}, "name the production host's one instance by ARN"),
        (0, {"Condition": {}}, "production's host, never a developer box"),
        (4, {"Condition": {"StringEquals": {"ssm:resourceTag/devprod:role": "developer", "ssm:resourceTag/devprod:stack": "prod"}}}, "never a developer box"),
        (4, {"Resource": ["arn:aws:ssm:eu-central-1::document/AWS-RunShellScript"]}, "only the production host and the deploy document"),
        (1, {"Resource": "arn:aws:ssm:eu-central-1::document/AWS-StartSSHSession"}, "only the production host and the shell document"),
        (5, {"Action": ["ec2:DescribeInstances", "ec2:StartInstances"]}, "'ec2:StartInstances' is not one of"),
        (2, {"Resource": "arn:aws:ssm:eu-central-1:123456789012:session/*"}, "only the caller's own sessions"),
        (6, {"NotAction": "logs:DeleteLogGroup"}, "NotAction/NotResource grants more than production"),
    ],
    ids=["any-instance", "no-tags", "developer-tag", "run-shell", "ssh-document", "start-instances", "any-session", "not-action"],
)
def test_s29_operator_rule_refuses_each_broken_property(operators, index, changes, message):
    from policy.rules import violations

    policy, doc = operators
    assert violations(policy.type, policy.inputs, {}) == [], policy.urn
    broken = json.loads(json.dumps(doc))
    broken["Statement"][index].update(changes)
    problems = violations(policy.type, {**policy.inputs, "policy": json.dumps(broken)}, {})
    assert any(message in p for p in problems), problems
