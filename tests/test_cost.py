"""Cost estimate: schedule arithmetic across zones and weekdays, pricing, live prices (Stubber)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from devprod import contracts, cost
from devprod.cli import app
from tests.conftest import STACKS, write_stack

UTC = timezone.utc
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def hours(window_start, window_end, **schedule):
    return cost.running_hours(window_start, window_end, stop_at=schedule.get("stop"), start_at=schedule.get("start"),
                              days=schedule.get("days", WEEKDAYS), tz=schedule.get("tz", "Europe/Berlin"))


def test_office_hours_week_is_sixty_hours_in_any_zone():
    monday = datetime(2026, 1, 5, tzinfo=UTC)
    for tz in ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"):
        assert hours(monday - timedelta(days=1), monday + timedelta(days=6), start="08:00", stop="20:00", tz=tz) == 60.0, tz


def test_the_utc_window_cuts_each_zone_differently():
    monday = datetime(2026, 1, 5, tzinfo=UTC)
    noon = monday + timedelta(hours=12)
    assert hours(monday, noon, start="08:00", stop="20:00", tz="Asia/Tokyo") == 11.0  # Mon 08:00 JST = Sun 23:00 UTC
    assert hours(monday, noon, start="08:00", stop="20:00", tz="America/New_York") == 0.0  # starts 13:00 UTC
    assert hours(monday, noon, start="08:00", stop="20:00", tz="Europe/Berlin") == 5.0  # 07:00-12:00 UTC


def test_weekend_days_and_daylight_saving():
    week = datetime(2026, 3, 23, tzinfo=UTC)  # Europe springs forward on Sunday 2026-03-29 at 02:00
    assert hours(week, week + timedelta(weeks=1), start="08:00", stop="20:00", days=("sat", "sun")) == 24.0
    assert hours(week, week + timedelta(weeks=1), start="00:00", stop="06:00", days=("sun",)) == 5.0
    assert hours(week, week + timedelta(weeks=1), start="00:00", stop="06:00", days=("sat",)) == 6.0


def test_manual_start_assumption_and_monthly_scaling():
    schedule = {"stop_at": "20:00", "start_at": None, "days": WEEKDAYS, "timezone": "Europe/Berlin"}
    monthly = cost.monthly_hours(schedule)
    assert round(monthly, 1) == round(60 / 168 * 730, 1)  # about a third of the month
    assert cost.monthly_hours(None) == 730
    # started by the schedule but never stopped: it runs all month once started
    assert cost.monthly_hours({**schedule, "stop_at": None, "start_at": "08:00"}) == 730


def test_schedules_are_read_from_the_plan_itself(dev_plan):
    """Pricing needs no stack config, so a base plan is priced with its own schedules."""
    schedules = cost.schedules_of(dev_plan.to_json()["resources"])
    office = {"stop_at": "20:00", "start_at": None, "days": WEEKDAYS, "timezone": "Europe/Berlin"}
    assert schedules == {"alice-box": office, "carol-box": office}  # bob is always on


def test_a_schedule_of_another_shape_is_a_clear_error(dev_plan):
    plan = json.loads(json.dumps(dev_plan.to_json()))
    stop = next(r for r in plan["resources"] if r["name"] == "alice-stop")
    stop["inputs"]["scheduleExpression"] = "rate(1 hour)"
    with pytest.raises(cost.PriceError, match=r"schedule alice-stop: cannot price 'rate\(1 hour\)'"):
        cost.estimate(plan, "eu-central-1")


def test_dev_stack_estimate_by_component(dev_plan):
    estimate = cost.estimate(dev_plan.to_json(), "eu-central-1")
    by = estimate.by_component()
    p = cost.region_prices("eu-central-1")
    alice_hours = 60 / 168 * 730
    expected_alice = (round(alice_hours * p["instance_hour"]["t3.large"], 2) + round(30 * p["gp3_gb_month"], 2)
                      + round(alice_hours * p["public_ipv4_hour"], 2) + round(50 * p["gp3_gb_month"], 2))  # the idle stop runs on the box: no alarm
    assert by["DeveloperInstance alice"] == pytest.approx(expected_alice, abs=0.02)
    # bob is always on; carol pays an Elastic IP all month and no second public address
    assert [l.quantity for l in estimate.lines if l.item.startswith("t3.xlarge")] == ["730 h"]
    carol = [l.item for l in estimate.lines if l.component == "DeveloperInstance carol"]
    assert "Elastic IP (carol-eip)" in carol and "public IPv4 while running" not in carol
    assert estimate.total == round(sum(by.values()), 2)


def test_prod_estimate_counts_each_customer_managed_key(prod_plan):
    estimate = cost.estimate(prod_plan.to_json(), "eu-central-1")
    keys = [(l.component, l.item, l.monthly) for l in estimate.lines if l.item.startswith("KMS key")]
    assert keys == [
        ("DeployPipeline delivery", "KMS key (delivery-alerts-key)", 1.0),
        ("ProductionService production", "KMS key (production-parameters-key)", 1.0),
    ]


def test_region_without_prices_is_a_clear_error(tmp_path):
    text = (STACKS / "Pulumi.dev.yaml").read_text().replace("aws:region: eu-central-1", "aws:region: ap-south-1")
    text = text.replace("availabilityZones: [eu-central-1a, eu-central-1b]", "availabilityZones: [ap-south-1a, ap-south-1b]")
    text = text.replace("availabilityZone: eu-central-1b", "availabilityZone: ap-south-1b")
    write_stack(tmp_path, "dev", text)
    result = CliRunner().invoke(app, ["plan", "dev", "--cost", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no prices for region 'ap-south-1' in prices.json (have: eu-central-1, eu-west-1, us-east-1); use --live-prices" in result.stderr


def _pricing_stub(price):
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    item = {"product": {"attributes": {"instanceType": "t3.large"}}, "terms": {"OnDemand": {"T1": {"priceDimensions": {
        "D1": {"unit": "Hrs", "pricePerUnit": {"USD": price}}}}}}}
    stubber.add_response("get_products", {"PriceList": [json.dumps(item)], "FormatVersion": "aws_v1"},
                         {"ServiceCode": "AmazonEC2", "Filters": [
                             {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "t3.large"},
                             {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "eu-central-1"},
                             {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
                             {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
                             {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
                             {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"}]})
    stubber.activate()
    return client, stubber


def test_live_prices_from_the_price_list_api():
    """Stubbed: the Price List API (moto has no pricing service)."""
    client, stubber = _pricing_stub("0.0960000000")
    assert cost.live_instance_prices(client, "eu-central-1", ["t3.large", "t3.large"]) == {"t3.large": 0.096}
    stubber.assert_no_pending_responses()
    client, _ = _pricing_stub("0.0000000000")
    with pytest.raises(cost.PriceError, match="no on-demand price for t3.large in eu-central-1"):
        cost.live_instance_prices(client, "eu-central-1", ["t3.large"])


def test_a_type_without_an_offline_price_is_shown_unpriced_not_an_error(dev_plan):
    """A valid type prices.json lacks (m6i.xlarge) must not fail a PR's offline diff."""
    plan = json.loads(json.dumps(dev_plan.to_json()))
    box = next(r for r in plan["resources"] if r["name"] == "alice-box")
    box["inputs"]["instanceType"] = "m6i.xlarge"
    estimate = cost.estimate(plan, "eu-central-1")
    (line,) = [line for line in estimate.lines if "m6i.xlarge" in line.item]
    assert "UNPRICED" in line.item and line.monthly == 0.0


def test_the_cost_view_fits_80_columns(stack_project):
    result = CliRunner().invoke(app, ["plan", "dev", "--cost", "--project-dir", str(stack_project)])
    assert result.exit_code == 0, result.output
    assert "total" in result.stdout and "assumes: 730 hours per month" in result.stdout
    wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert wide == []


# ------------------------------------------------ what issue #15 adds (synthetic plan resources)

COMPONENT = "urn:pulumi:prod::devprod::devprod:index:ProductionService::production"


def _resource(type_, name, **inputs):
    return {"urn": f"{COMPONENT}${type_}::{name}", "type": type_, "name": name, "parent": COMPONENT,
            "inputs": inputs, "options": {}}


USER_DATA = "#!/bin/bash\ninstall -m 0755 devprod-proxy-metrics.py /usr/local/lib/devprod/\n"


def _ha_plan(hosts=2, alarms=(), user_data=USER_DATA):
    component = {"urn": COMPONENT, "type": "devprod:index:ProductionService", "name": "production",
                 "parent": None, "inputs": {}, "options": {}}
    tags = {"devprod:stack": "prod", "devprod:role": "production"}
    resources = [component] + [_resource(cost.INSTANCE, f"production-host-{i}", instanceType="t3.small",
                                         rootBlockDevice={"volumeSize": 20}, tags=tags,
                                         userData=user_data) for i in range(hosts)]
    resources += [_resource(cost.LOAD_BALANCER, "production-alb", loadBalancerType="application"),
                  _resource(cost.CERTIFICATE, "production-cert", domainName="app.example.com"),
                  _resource(cost.DNS_RECORD, "production-alias", aliases=[{"name": "x", "zoneId": "z"}])]
    return {"stack": "prod", "resources": resources + list(alarms), "outputs": {}}


def _lines(estimate, prefix):
    return [(l.item, l.quantity, l.monthly) for l in estimate.lines if l.item.startswith(prefix)]


def test_n_production_hosts_cost_n_times_one():
    one, three = (cost.estimate(_ha_plan(hosts=n), "eu-central-1") for n in (1, 3))
    p = cost.region_prices("eu-central-1")
    host = round(730 * p["instance_hour"]["t3.small"], 2)
    assert [m for _, _, m in _lines(three, "t3.small")] == [host] * 3
    assert [m for _, _, m in _lines(three, "root gp3")] == [round(20 * p["gp3_gb_month"], 2)] * 3
    # one PutMetricData call a minute per host, but three custom metrics per stack
    assert _lines(three, "PutMetricData") == [(f"PutMetricData (production-host-{i})", "43800 calls", 0.44)
                                              for i in range(3)]
    assert _lines(one, "proxy custom metrics") == _lines(three, "proxy custom metrics") == [
        ("proxy custom metrics", "3", round(3 * p["custom_metric_month"], 2))]
    assert three.total - one.total == pytest.approx(2 * (host + round(20 * p["gp3_gb_month"], 2) + 0.44), abs=0.02)


def test_load_balancer_hours_and_the_stated_lcu_assumption():
    estimate = cost.estimate(_ha_plan(), "eu-central-1")
    p = cost.region_prices("eu-central-1")
    assert _lines(estimate, "ALB") == [("ALB (production-alb)", "730 h", round(730 * p["alb_hour"], 2)),
                                       ("ALB LCUs (production-alb)", "1 x 730 h", round(730 * p["alb_lcu_hour"], 2))]
    assert "1 LCU on average per load balancer, all month" in estimate.assumptions
    assert round(730 * p["alb_hour"], 2) == 19.71  # 0.027 an hour in eu-central-1
    # a network load balancer is not priced as an ALB
    plan = _ha_plan()
    next(r for r in plan["resources"] if r["name"] == "production-alb")["inputs"]["loadBalancerType"] = "network"
    assert _lines(cost.estimate(plan, "eu-central-1"), "ALB") == []


def test_certificates_and_alias_records_are_free_and_say_so():
    estimate = cost.estimate(_ha_plan(), "us-east-1")
    assert _lines(estimate, "ACM") == [("ACM certificate (production-cert) free", "1", 0.0)]
    assert _lines(estimate, "alias") == [("alias record (production-alias) free", "1", 0.0)]
    assert "public ACM certificates and alias records to a load balancer are free" in estimate.assumptions


def test_alarms_are_priced_per_metric_they_watch():
    def metric(period=60):
        return {"metric": {"namespace": "devprod/Proxy", "metricName": "Requests", "period": period, "stat": "Sum"}}

    alarms = [_resource(cost.ALARM, "plain", metricName="UnHealthyHostCount", period=60),
              _resource(cost.ALARM, "math", metricQueries=[
                  {"id": "e", "expression": "100*errors/requests", "returnData": True},
                  {"id": "errors", **metric()}, {"id": "requests", **metric()}]),
              _resource(cost.ALARM, "fast", metricName="CPUUtilization", period=10)]
    estimate = cost.estimate(_ha_plan(alarms=alarms), "eu-west-1")
    assert _lines(estimate, "alarm") == [("alarm (plain)", "1", 0.10), ("alarm (math)", "2 metrics", 0.20)]
    assert _lines(estimate, "high-res") == [("high-res alarm (fast)", "1", 0.30)]


def test_the_cost_diff_per_component_sees_what_the_issue_adds():
    before, after = (cost.estimate(_ha_plan(hosts=n), "eu-central-1") for n in (1, 2))
    change = cost.CostChange.between(before, after)
    assert change.changed_components() == ["ProductionService production"]
    assert change.of("ProductionService production") == change.delta > 0


def test_proxy_metrics_are_priced_only_when_the_plan_runs_them():
    """A base plan from before the script existed is priced without them."""
    bare = cost.estimate(_ha_plan(user_data="#!/bin/bash\n"), "eu-central-1")
    assert _lines(bare, "proxy") == _lines(bare, "PutMetricData") == []
    assert not any("proxy metrics" in a for a in bare.assumptions)
    watched = _resource(cost.ALARM, "errors", namespace=contracts.PROXY_METRICS_NAMESPACE,
                        metricName=contracts.PROXY_SERVER_ERRORS, period=60)
    alarmed = cost.estimate(_ha_plan(user_data="#!/bin/bash\n", alarms=[watched]), "eu-central-1")
    assert [q for _, q, _ in _lines(alarmed, "proxy")] == ["3"] and len(_lines(alarmed, "PutMetricData")) == 2
    change = cost.CostChange.between(bare, cost.estimate(_ha_plan(), "eu-central-1"))
    assert change.of("ProductionService production") == pytest.approx(0.90 + 2 * 0.44, abs=0.01)


def test_a_stack_without_production_hosts_has_no_proxy_metrics(dev_plan):
    estimate = cost.estimate(dev_plan.to_json(), "eu-central-1")
    assert _lines(estimate, "proxy") == _lines(estimate, "PutMetricData") == []
    assert not any("proxy metrics" in a for a in estimate.assumptions)


def _elb_stub(prices):
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    items = [json.dumps({"product": {"attributes": {"usagetype": usage}}, "terms": {"OnDemand": {"T1": {
        "priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}}}) for usage, usd in prices]
    stubber.add_response("get_products", {"PriceList": items, "FormatVersion": "aws_v1"}, {
        "ServiceCode": "AWSELB", "Filters": [
            {"Type": "TERM_MATCH", "Field": "productFamily", "Value": "Load Balancer-Application"},
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "eu-central-1"},
            {"Type": "TERM_MATCH", "Field": "locationType", "Value": "AWS Region"}]})
    stubber.activate()
    return client, stubber


def test_live_load_balancer_prices_from_the_price_list_api():
    """Stubbed: the Price List API (moto has no pricing service)."""
    client, stubber = _elb_stub([("EUC1-LoadBalancerUsage", "0.0270000000"), ("EUC1-LCUUsage", "0.0080000000"),
                                 ("EUC1-IdleProvisionedLBCapacity", "0.0099000000")])
    assert cost.live_load_balancer_prices(client, "eu-central-1") == {"alb_hour": 0.027, "alb_lcu_hour": 0.008}
    stubber.assert_no_pending_responses()
    client, _ = _elb_stub([("EUC1-LoadBalancerUsage", "0.0270000000")])
    with pytest.raises(cost.PriceError, match="no alb_lcu_hour price for region eu-central-1"):
        cost.live_load_balancer_prices(client, "eu-central-1")


def test_the_prod_cost_view_fits_80_columns(stack_project):
    result = CliRunner().invoke(app, ["plan", "prod", "--cost", "--project-dir", str(stack_project)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stdout.splitlines() if len(line) > 80] == []


def test_live_prices_include_the_load_balancer_only_when_the_plan_has_one(monkeypatch):
    """cli's estimator asks the Price List API (stubbed) for what the plans hold."""
    from types import SimpleNamespace

    from devprod import aws, cli

    asked = []
    monkeypatch.setattr(cost, "live_instance_prices", lambda _c, region, types: asked.append("ec2") or {"t3.small": 0.1})
    monkeypatch.setattr(cost, "live_load_balancer_prices",
                        lambda _c, region: asked.append("elb") or {"alb_hour": 1.0, "alb_lcu_hour": 0.5})
    monkeypatch.setattr(aws, "Clients", lambda **_kw: SimpleNamespace(pricing=object()))
    config = SimpleNamespace(region="eu-central-1")
    host = {"type": cost.INSTANCE, "inputs": {"instanceType": "t3.small"}}
    cli._estimator(config, True, [{"resources": [host]}])
    assert asked == ["ec2"]
    cli._estimator(config, True, [{"resources": [host, {"type": cost.LOAD_BALANCER, "inputs": {}}]}])
    assert asked == ["ec2", "ec2", "elb"]
