"""Issue #15, the infrastructure side: N hosts over the zones, the HTTPS load balancer, the live
release for new hosts, the Bake alarms, and a one-host stack that plans as before."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from components.config import ConfigError, parse_stack_config
from devprod.plan import load_stack_raw, plan_stack
from tests.conftest import STACKS, plan_of, write_stack

SHAPE = STACKS / "prod-one-host-shape.json"
CERT = "arn:aws:acm:eu-central-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"


@pytest.fixture(scope="module")
def three():
    raw, _ = load_stack_raw(STACKS, "prod3")
    return plan_of(raw, stack="prod3")


@pytest.fixture(scope="module")
def one():
    raw, _ = load_stack_raw(STACKS, "prod")
    return plan_of(raw)


# ------------------------------------------------------------------ one host: as before


# What issue #15 changes on a one-host stack's existing resources, on purpose: the
# host role and operators' policies gain statements; the Release function's code
# ships devprod/contracts.py, which gained output keys.
CHANGED_ON_PURPOSE = {("production-access", "policy"), ("production-operators", "policy"),
                      ("delivery-release", "code"),
                      # The pipeline's side of #15 (tested in test_deploy_pipeline.py): the Release
                      # stage's bake and rollback conditions, the function's batch and live-release
                      # settings, the roles' alarm and parameter statements.
                      ("delivery-pipeline", "stages"), ("delivery-release", "environment"),
                      ("delivery-release-role-policy", "policy"), ("delivery-pipeline-role-policy", "policy"),
                      ("delivery-alerts-policy", "policy")}


def test_a_one_host_stack_keeps_every_resource_name_type_and_input(one):
    before = json.loads(SHAPE.read_text())
    after = {r.name: r for r in one.resources}
    missing = sorted(set(before) - set(after))
    assert missing == [], "resources a one-host stack would lose"
    for name, old in before.items():
        new = after[name]
        assert new.type == old["type"], name
        for key, value in old["inputs"].items():
            if key == "userData" or (name, key) in CHANGED_ON_PURPOSE:
                continue
            assert json.loads(json.dumps(new.inputs.get(key), default=str)) == value, f"{name}.{key}"
    added = sorted(set(after) - set(before))
    assert added == ["delivery-alarm", "delivery-alarm-to-alerts", "production-5xx-rate", "production-host-tools",
                     "production-live-release", "production-unhealthy-hosts"]


def test_one_host_keeps_its_eip_and_cidr_ingress_and_plain_health_url(one):
    assert [r.name for r in one.of_type("aws:ec2/eip:Eip")] == ["production-eip"]
    assert one.of_type("aws:lb/loadBalancer:LoadBalancer") == []
    assert one.outputs["production"]["healthUrl"] == "http://computed-eip-production-eip:8000/health"
    assert one.outputs["production"]["instanceIds"] == ["i-computed-production-host"]


def test_without_a_load_balancer_bake_watches_the_proxy_metrics(one):
    errors = one.named("production-5xx-rate").inputs
    metrics = {q["metric"]["metricName"]: q["metric"] for q in errors["metricQueries"] if "metric" in q}
    assert set(metrics) == {"ServerErrors", "Requests"}
    assert all(m["namespace"] == "devprod/Proxy/prod" and m["dimensions"] == {"Stack": "prod"} for m in metrics.values())
    unhealthy = one.named("production-unhealthy-hosts").inputs
    assert (unhealthy["metricName"], unhealthy["threshold"], unhealthy["comparisonOperator"]) == (
        "UnhealthyHosts", 1, "GreaterThanOrEqualToThreshold")
    for alarm in (errors, unhealthy):
        assert alarm["treatMissingData"] == "notBreaching"
        assert alarm["name"].startswith("devprod-prod-production-")
    assert one.outputs["production"]["alarmNames"] == [
        "devprod-prod-production-5xx-rate", "devprod-prod-production-unhealthy-hosts"]


# ------------------------------------------------------------------ three hosts behind HTTPS


def test_three_hosts_in_three_zones_termination_protected_without_eips(three):
    hosts = {r.name: r for r in three.of_type("aws:ec2/instance:Instance")}
    assert sorted(hosts) == ["production-host", "production-host-2", "production-host-3"]
    assert [hosts[n].inputs["subnetId"] for n in sorted(hosts)] == [
        f"network-subnet-eu-central-1{z}-computed-id" for z in "abc"]
    assert all(h.inputs["disableApiTermination"] is True for h in hosts.values())
    assert len({tuple(h.inputs["vpcSecurityGroupIds"]) for h in hosts.values()}) == 1
    assert three.of_type("aws:ec2/eip:Eip") == []
    alarms = {r.name for r in three.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert {"production-auto-recover", "production-host-2-auto-recover", "production-host-3-auto-recover"} <= alarms


def test_hosts_admit_the_app_port_only_from_the_load_balancer(three):
    (rule,) = three.named("production-sg").inputs["ingress"]
    assert rule["securityGroups"] == [three.named("production-lb-sg").computed["id"]]
    assert not rule.get("cidrBlocks") and not rule.get("ipv6CidrBlocks")
    lb_rules = three.named("production-lb-sg").inputs["ingress"]
    assert sorted(r["fromPort"] for r in lb_rules) == [80, 443]
    assert all(r["cidrBlocks"] == ["0.0.0.0/0"] for r in lb_rules)


def test_listeners_https_with_certificate_and_tls_policy_and_80_redirects(three):
    https = three.named("production-lb-https").inputs
    assert (https["port"], https["protocol"], https["sslPolicy"]) == (443, "HTTPS", "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09")
    assert https["certificateArn"] == three.named("production-lb-certificate").computed["arn"]
    redirect = three.named("production-lb-http-redirect").inputs
    assert redirect["port"] == 80
    assert redirect["defaultActions"] == [{"type": "redirect", "redirect": {
        "protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]
    alb = three.named("production-lb-alb").inputs
    assert alb["dropInvalidHeaderFields"] is True and alb["enableDeletionProtection"] is True
    assert alb["internal"] is False and len(alb["subnets"]) == 3


def test_certificate_validated_in_the_hosted_zone_and_alias_record(three):
    cert = three.named("production-lb-certificate").inputs
    assert (cert["domainName"], cert["validationMethod"]) == ("app.example.com", "DNS")
    record = three.named("production-lb-certificate-validation-record").inputs
    assert record["zoneId"] == "Z0123456789ABCDEFGHIJ"
    validation = three.named("production-lb-certificate-validation").inputs
    assert validation["validationRecordFqdns"] == [record["name"]]
    alias = three.named("production-lb-alias").inputs
    assert (alias["name"], alias["type"], alias["zoneId"]) == ("app.example.com", "A", "Z0123456789ABCDEFGHIJ")


def test_target_group_checks_the_health_path_and_drains_like_a_slot_switch(three):
    group = three.named("production-lb-targets").inputs
    assert (group["port"], group["protocol"]) == (8000, "HTTP")
    assert group["healthCheck"]["path"] == "/health" and group["healthCheck"]["matcher"] == "200"
    assert group["deregistrationDelay"] == 30
    attached = {a.inputs["targetId"] for a in three.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")}
    assert attached == {f"i-computed-production-host{s}" for s in ("", "-2", "-3")}


def test_bake_alarms_watch_the_load_balancer(three):
    errors = three.named("production-5xx-rate").inputs
    names = {q["metric"]["metricName"] for q in errors["metricQueries"] if "metric" in q}
    assert names == {"HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count", "RequestCount"}
    (rate,) = [q for q in errors["metricQueries"] if "expression" in q]
    assert rate["returnData"] is True and "/ requests" in rate["expression"]
    unhealthy = three.named("production-unhealthy-hosts").inputs
    assert unhealthy["metricName"] == "UnHealthyHostCount" and unhealthy["threshold"] == 0
    assert set(unhealthy["dimensions"]) == {"LoadBalancer", "TargetGroup"}
    assert three.outputs["production"]["alarmNames"] == [
        "devprod-prod3-production-5xx-rate", "devprod-prod3-production-unhealthy-hosts"]


def test_live_release_parameter_starts_unset_and_is_left_to_the_release(three):
    parameter = three.named("production-live-release")
    assert parameter.inputs["name"] == "/devprod/prod3/live-release"
    assert parameter.inputs["type"] == "String"
    assert parameter.options["ignoreChanges"] == ["value"]


def test_host_role_reads_the_live_release_and_document_from_its_hosts_only(three):
    policy = json.loads(three.named("production-access").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    hosts = sorted(h.computed["arn"] for h in three.of_type("aws:ec2/instance:Instance"))
    live = by_sid["ReadLiveRelease"]
    assert live["Action"] == "ssm:GetParameter"
    assert live["Resource"] == "arn:aws:ssm:eu-central-1:123456789012:parameter/devprod/prod3/live-release"
    assert sorted(live["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"]) == hosts
    document = by_sid["ReadDeployDocument"]
    assert (document["Action"], document["Resource"]) == ("ssm:GetDocument", [
        three.named("production-deploy").computed["arn"], three.named("production-host-tools").computed["arn"]])
    metrics = by_sid["PublishProxyMetrics"]
    # Its own stack's namespace, from its own hosts: no stack can set off another's bake alarms.
    assert metrics["Condition"]["StringEquals"] == {"cloudwatch:namespace": "devprod/Proxy/prod3"}
    assert sorted(metrics["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"]) == hosts
    assert sorted(by_sid["ReadOwnParameters"]["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"]) == hosts


def test_operators_may_set_the_live_release_freeze_this_pipeline_and_read_target_health(three):
    policy = json.loads(three.named("production-operators").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["LiveRelease"]["Resource"].endswith(":parameter/devprod/prod3/live-release")
    pipeline = "arn:aws:codepipeline:eu-central-1:123456789012:ExampleDeployPipeline"
    assert by_sid["FreezePipeline"]["Resource"] == f"{pipeline}/Release"  # the way into Release only
    assert by_sid["ReadPipelineState"]["Resource"] == pipeline
    assert by_sid["HostHealth"]["Action"] == "elasticloadbalancing:DescribeTargetHealth"
    send = by_sid["SendDeployDocumentToProduction"]["Resource"]
    assert len([r for r in send if ":instance/" in r]) == 3


def test_each_rollout_batch_may_leave_this_stacks_target_group_and_nothing_else(three):
    """devprod.rollout takes a batch out of the balancer while it switches: the Release function
    and operators (`devprod deploy`) may register and deregister in this target group only."""
    group = three.named("production-lb-targets").computed["arn"]
    assert group.startswith("arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/")
    for policy_name in ("production-operators", "delivery-release-role-policy"):
        by_sid = {s["Sid"]: s for s in json.loads(three.named(policy_name).inputs["policy"])["Statement"]}
        roll = by_sid["RollHostsThroughTheBalancer"]
        assert roll["Action"] == ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"]
        assert roll["Resource"] == group, policy_name
        # Reading the drain: granted once in each policy.
        describes = [s for s in by_sid.values() if "elasticloadbalancing:DescribeTargetHealth" in str(s["Action"])]
        assert len(describes) == 1 and describes[0]["Resource"] == "*", policy_name
    variables = three.named("delivery-release").inputs["environment"]["variables"]
    assert (variables["TARGET_GROUP_ARN"], variables["TARGET_PORT"]) == (group, "8000")
    assert (three.outputs["production"]["targetGroupArn"], three.outputs["production"]["appPort"]) == (group, 8000)


def test_one_host_has_no_target_group_to_leave(one):
    variables = one.named("delivery-release").inputs["environment"]["variables"]
    assert "TARGET_GROUP_ARN" not in variables and "TARGET_PORT" not in variables
    for policy_name in ("production-operators", "delivery-release-role-policy"):
        assert "elasticloadbalancing:DeregisterTargets" not in one.named(policy_name).inputs["policy"]
    assert one.outputs["production"]["targetGroupArn"] is None


@pytest.mark.parametrize("batch, warned", [(2, False), (3, True), (5, True)])
def test_a_batch_of_every_host_is_warned_about(tmp_path, batch, warned):
    """Every host at once: none leaves the load balancer before its switch, and a failing
    release reaches all of them (allowed: a team may choose it; said on every plan)."""
    text = (STACKS / "Pulumi.prod3.yaml").read_text().replace(
        "    name: ExampleDeployPipeline\n", f"    name: ExampleDeployPipeline\n    batch: {batch}\n")
    write_stack(tmp_path, "prod3", text)
    warnings = plan_stack(tmp_path, "prod3").warnings
    expected = (f"Pulumi.prod3.yaml: pipeline.batch {batch} is at least production.hosts 3: every host switches "
                "at once, none leaves the load balancer first and a failing release reaches all of them; "
                "a batch below 3 rolls")
    assert warnings == ([expected] if warned else [])


def test_outputs_and_no_violations(three):
    production = three.outputs["production"]
    assert production["healthUrl"] == "https://app.example.com/health"
    assert production["domain"] == "app.example.com"
    assert production["loadBalancerDns"].endswith(".elb.amazonaws.com")
    assert production["liveReleaseParameter"] == "/devprod/prod3/live-release"
    assert len(production["instanceIds"]) == 3
    assert three.violations() == []


def test_an_existing_certificate_needs_no_zone_and_no_certificate_resource(prod_raw):
    raw = copy.deepcopy(prod_raw)
    raw["devprod:production"].update(hosts=2, domain="app.example.com", certificateArn=CERT)
    plan = plan_of(raw)
    assert plan.of_type("aws:acm/certificate:Certificate") == []
    assert plan.of_type("aws:route53/record:Record") == []
    assert plan.named("production-lb-https").inputs["certificateArn"] == CERT
    assert plan.violations() == []


# ------------------------------------------------------------------ config rules


def _config(prod_raw, **production):
    raw = copy.deepcopy(prod_raw)
    raw["devprod:production"].update(production)
    return parse_stack_config(raw, project="devprod", stack="prod")


def test_hosts_spread_round_robin_from_host_ones_zone(prod_raw):
    config = _config(prod_raw, hosts=3, domain="app.example.com", certificateArn=CERT,
                     availabilityZone="eu-central-1b")
    assert config.production_zones == ("eu-central-1b", "eu-central-1a", "eu-central-1b")
    assert config.production_zone == "eu-central-1b"
    assert _config(prod_raw).production_zones == ("eu-central-1a",)


@pytest.mark.parametrize(
    "production, message",
    [
        ({"hosts": 2}, "hosts 2 needs domain"),
        ({"hosts": 0}, "production.hosts"),
        ({"hosts": 11}, "production.hosts"),
        ({"domain": "app.example.com"}, "needs hostedZoneId or certificateArn"),
        ({"domain": "App.Example.com", "certificateArn": CERT}, "production.domain"),
        ({"domain": "*.example.com", "certificateArn": CERT}, "production.domain"),
        ({"hostedZoneId": "Z0123"}, "need domain"),
        ({"domain": "app.example.com", "hostedZoneId": "zone-1"}, "production.hostedZoneId"),
        ({"domain": "app.example.com", "certificateArn": "arn:aws:iam::123456789012:server-certificate/x"},
         "production.certificateArn"),
        ({"domain": "app.example.com", "certificateArn": CERT.replace("eu-central-1", "us-east-1")},
         "production.certificateArn"),
    ],
)
def test_each_production_rule_is_one_line_naming_the_key(prod_raw, production, message):
    with pytest.raises(ConfigError) as caught:
        _config(prod_raw, **production)
    text = str(caught.value)
    assert message in text, text
    assert all("\n" not in p for p in caught.value.problems)


def test_a_load_balancer_needs_two_zones(prod_raw):
    raw = copy.deepcopy(prod_raw)
    raw["devprod:network"]["availabilityZones"] = ["eu-central-1a"]
    raw["devprod:production"].update(domain="app.example.com", certificateArn=CERT)
    with pytest.raises(ConfigError, match=r"devprod:network\.availabilityZones.*at least two"):
        parse_stack_config(raw, project="devprod", stack="prod")


def test_the_certificate_region_error_names_both_regions(prod_raw):
    with pytest.raises(ConfigError, match=r"us-east-1, not the stack's region 'eu-central-1'"):
        _config(prod_raw, domain="app.example.com", certificateArn=CERT.replace("eu-central-1", "us-east-1"))


def test_the_example_stack_file_parses(root: Path):
    raw, _ = load_stack_raw(STACKS, "prod3")
    config = parse_stack_config(raw, project="devprod", stack="prod3")
    assert config.production is not None and config.production.hosts == 3
    assert config.production_zones == ("eu-central-1a", "eu-central-1b", "eu-central-1c")


# ------------------------------------------------------------------ first boot: user data


def test_user_data_carries_the_first_deploy_and_stays_under_16_kb(three):
    from components.production_service import render_user_data
    from components.config import ProductionSettings

    user_data = three.named("production-host-2").inputs["userData"]
    assert "LIVE_RELEASE_PARAMETER=/devprod/prod3/live-release" in user_data
    assert "DOCUMENT=production-deploy-computed" in user_data
    assert "TOOLS_DOCUMENT=production-host-tools-computed" in user_data
    assert "devprod-first-deploy.sh" in user_data and "first_deploy" in user_data
    settings = ProductionSettings(start_command="node server.js")
    rendered = render_user_data(settings, "prod3", "eu-central-1", "production-deploy-0123", "production-host-tools-0123")
    # The proxy metrics script travels in the host-tools document, not here: room stays for settings.
    assert len(rendered.encode()) < 16384 - 2048


def test_the_host_tools_document_is_a_plain_install_step(three):
    document = json.loads(three.named("production-host-tools").inputs["content"])
    assert document["schemaVersion"] == "2.2" and [s["name"] for s in document["mainSteps"]] == ["install"]
    assert three.named("production-host-tools").inputs["documentType"] == "Command"


def test_packed_scripts_unpack_as_the_bootstrap_does(tmp_path):
    from components.production_service import FIRST_DEPLOY_FILE, packed

    text = FIRST_DEPLOY_FILE.read_text()
    out = tmp_path / "first-deploy.sh"
    subprocess_run = __import__("subprocess").run
    result = subprocess_run(["bash", "-c", f"printf '%s' \"$1\" | base64 -d | gunzip > {out}", "-", packed(text)])
    assert result.returncode == 0 and out.read_text() == text
    assert packed(text) == packed(text)  # deterministic: no timestamp in the gzip header


def test_the_bootstrap_installs_the_proxy_metrics_timer_with_the_agreed_command_line():
    text = (Path(__file__).parent.parent / "scripts" / "user-data" / "prod.sh").read_text()
    assert ("devprod-proxy-metrics.py --stack ${STACK} --log ${ACCESS_LOG} --health-url "
            "http://127.0.0.1:${PORT}${HEALTH_PATH} --state ${PROXY_METRICS_STATE} --region ${REGION}") in text
    assert "devprod-proxy-metrics.timer" in text and "OnUnitActiveSec=60" in text
    subprocess_run = __import__("subprocess").run
    assert subprocess_run(["bash", "-n", "scripts/user-data/prod.sh"], cwd=Path(__file__).parent.parent).returncode == 0


def _proxy_metrics_file():
    from components.production_service import PROXY_METRICS_FILE
    return PROXY_METRICS_FILE


def test_the_proxy_metrics_script_exists_and_is_what_the_tools_document_installs(tmp_path):
    from components.production_service import TOOLS_DIR, tools_document

    script = _proxy_metrics_file().read_text()
    (step,) = json.loads(tools_document())["mainSteps"]
    text = "\n".join(step["inputs"]["runCommand"]).replace(TOOLS_DIR, str(tmp_path)).replace(" -o root -g root", "")
    subprocess_run = __import__("subprocess").run
    assert subprocess_run(["bash", "-c", text]).returncode == 0
    assert (tmp_path / "devprod-proxy-metrics.py").read_text() == script


def test_going_from_one_host_to_three_behind_https_replaces_nothing(one, prod_raw):
    from devprod.diff import compare

    raw = copy.deepcopy(prod_raw)
    raw["devprod:production"].update(hosts=3, domain="app.example.com", certificateArn=CERT)
    three_hosts = plan_of(raw)
    changes = compare(one.to_json(), three_hosts.to_json()).changes
    assert [c.name for c in changes if c.kind == "replace"] == []
    kinds = {c.name: c.kind for c in changes}
    # Host 1 stays; it loses its Elastic IP (the load balancer fronts it) and the group's CIDR rule.
    assert kinds["production-eip"] == "remove" and kinds["production-sg"] == "update"
    assert "production-host" not in kinds or kinds["production-host"] == "ignored"
    assert kinds["production-host-2"] == kinds["production-host-3"] == "add"
