"""The Grafana dashboard: structure, data source variable, and names the sidecar exports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SidecarProcess
from tests.scrape import exported_names, promql_metric_names

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "sidecar-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The dashboard JSON document."""
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return (panel title, target) for every query of every panel."""
    return [
        (panel["title"], target) for panel in dashboard["panels"] for target in panel["targets"]
    ]


def variable_selectors(dashboard: dict[str, Any]) -> list[str]:
    """Return the series selectors of the label_values() template variables."""
    selectors = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"variable {variable['name']} is not a label_values() query"
        selectors.append(match["selector"])
    return selectors


def panels_selecting(dashboard: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Return the panels whose queries select ``metric``."""
    return [
        panel
        for panel in dashboard["panels"]
        if any(metric in promql_metric_names(target["expr"]) for target in panel["targets"])
    ]


def test_dashboard_metadata(dashboard: dict[str, Any]) -> None:
    """The dashboard has a schema version, a uid, a title and a data source variable."""
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}

    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["id"] is None
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_query_uses_datasource_variable(dashboard: dict[str, Any]) -> None:
    """Every panel, query and query variable takes its data source from ${datasource}."""
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_panel_layout(dashboard: dict[str, Any]) -> None:
    """Panels have unique ids and refIds, fit the 24-column grid and do not overlap."""
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[x, y] = panel["title"]


@pytest.mark.parametrize(
    ("metric", "grouping"),
    [
        ("sidecar_polls_total", "by (outcome)"),
        ("sidecar_poll_errors_total", "by (reason)"),
        ("sidecar_poll_duration_seconds_bucket", "histogram_quantile("),
        ("sidecar_keys_stale", ""),
        ("sidecar_last_success_timestamp_seconds", "time() -"),
        ("sidecar_last_reload_timestamp_seconds", "time() -"),
        ("sidecar_secret_version_info", "by (version_id)"),
        ("sidecar_requests_total", "by (route, code)"),
    ],
)
def test_panel_for_each_topic(dashboard: dict[str, Any], metric: str, grouping: str) -> None:
    """Some panel selects each metric that operators watch, grouped as they need it."""
    panels = panels_selecting(dashboard, metric)
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]

    assert panels, f"no panel selects {metric}"
    assert any(grouping in expression for expression in expressions), (metric, grouping)


def test_dashboard_selects_exported_metrics(
    dashboard: dict[str, Any],
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """Every metric that a panel or a variable selects is exported by a running sidecar."""
    exported = exported_names(start_sidecar(make_secret(), metrics_port=-1))

    for title, target in targets(dashboard):
        selected = promql_metric_names(target["expr"])
        assert selected, f"{title}: {target['expr']!r} selects no metric"
        assert selected <= exported, f"{title} selects {selected - exported}"
    for selector in variable_selectors(dashboard):
        assert promql_metric_names(selector) <= exported, selector
