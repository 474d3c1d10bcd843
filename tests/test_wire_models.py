"""The request models of the API, in-process: camelCase in, snake_case domain values out,
keys the SDK sends that fnhost does not use ignored, and bad input a 400 in the CDF error
shape whose message names the field in the API's word (and whose ``field`` names it in the
domain's, for the web page)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from fnhost.api.models.assets import AssetsCreate, AssetsList, AssetsUpdate
from fnhost.api.models.calls import CallBody, CallsList
from fnhost.api.models.common import ByIds, ByIdsOnly
from fnhost.api.models.files import FilesList, FileWrite
from fnhost.api.models.functions import FunctionsCreate, FunctionsList
from fnhost.api.models.groups import GroupsCreate, GroupsDelete
from fnhost.api.models.raw import Keys, Rows
from fnhost.api.models.schedules import SchedulesCreate, SchedulesUpdate
from fnhost.api.models.sessions import SessionsCreate
from fnhost.api.wire import install_error_handlers, parse
from fnhost.errors import InvalidRequest, NotFound
from fnhost.services.functions import FunctionSpec
from fnhost.services.identifiers import Identifier, resolve_all


def error_of(model: type[Any], body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse(model, body)
    return err.value


# -- camelCase in, typed values out ---------------------------------------------------------------
def test_function_write_becomes_a_spec() -> None:
    body = {
        "items": [
            {
                "name": "f",
                "externalId": "x",
                "fileId": 7,
                "functionPath": "src/h.py",
                "envVars": {"A": "1"},
                "extraIndexUrls": ["https://example.org/simple"],
                "cpu": 1,  # an integer is a number
                "buildTime": 12,  # the SDK may send what fnhost does not use: ignored
            }
        ]
    }
    spec = parse(FunctionsCreate, body).items[0].spec()
    assert spec == FunctionSpec(
        name="f",
        file_id=7,
        external_id="x",
        function_path="src/h.py",
        env_vars={"A": "1"},
        extra_index_urls=["https://example.org/simple"],
        cpu=1.0,
    )


def test_snake_case_names_are_accepted_too() -> None:
    assert parse(CallBody, {"data": {"k": 1}, "nonce": "n"}).request().nonce == "n"
    assert parse(ByIds, {"items": [{"external_id": "x"}]}).identifiers() == [Identifier(external_id="x")]


def test_filters_and_ranges() -> None:
    filt = parse(FunctionsList, {"filter": {"createdTime": {"min": 1, "max": 2}, "fileId": 3}}).filter
    assert filt is not None
    f = filt.filter()
    assert (f.created_min, f.created_max, f.file_id) == (1, 2, 3)
    calls = parse(CallsList, {"filter": {"scheduleId": 4, "endTime": {"max": 9}}, "cursor": "12"})
    assert calls.filter is not None and calls.filter.filter().end_max == 9
    assert calls.cursor == "12"


def test_by_ids_keeps_ignore_unknown_ids_and_prefers_the_id() -> None:
    body = parse(ByIds, {"items": [{"id": 1, "externalId": "x"}, {"externalId": "y"}], "ignoreUnknownIds": True})
    assert body.ignore_unknown_ids is True
    assert body.identifiers() == [Identifier(id=1), Identifier(external_id="y")]
    assert parse(ByIdsOnly, {"items": [{"id": 3}]}).ids() == [3]


def test_session_and_schedule_bodies() -> None:
    request = parse(SessionsCreate, {"items": [{"tokenExchange": True}]}).items[0].request()
    assert request.token_exchange and request.client_id is None
    spec = parse(
        SchedulesCreate,
        {"items": [{"name": "s", "cronExpression": "* * * * *", "functionExternalId": "f", "nonce": "n"}]},
    ).items[0].spec()
    assert (spec.cron_expression, spec.function_external_id, spec.function_id) == ("* * * * *", "f", None)


def test_file_and_group_bodies() -> None:
    spec = parse(FileWrite, {"name": "f.zip", "mimeType": "application/zip", "dataSetId": 3, "labels": []}).spec()
    assert (spec.mime_type, spec.data_set_id) == ("application/zip", 3)
    listed = parse(FilesList, {"filter": {"externalIdPrefix": "x", "uploaded": True}, "limit": 5})
    assert listed.filter is not None and listed.filter.filter().external_id_prefix == "x"
    group = parse(GroupsCreate, {"items": [{"name": "g", "members": "allUserAccounts", "isDeleted": False}]})
    assert group.items[0].spec().members == "allUserAccounts"
    # the SDK deletes groups by bare ids; {"id": n} objects are accepted too
    assert parse(GroupsDelete, {"items": [1, {"id": 2}]}).ids() == [1, 2]


def test_raw_rows_keep_the_users_columns_as_given() -> None:
    rows = parse(Rows, {"items": [{"key": "k", "columns": {"camelCase": {"nested": [1]}}}]}).rows()
    assert rows[0].key == "k" and rows[0].columns == {"camelCase": {"nested": [1]}}
    assert parse(Keys, {"items": [{"key": "a"}, {"key": "b"}]}).keys() == ["a", "b"]


def test_asset_bodies() -> None:
    spec = parse(AssetsCreate, {"items": [{"name": "a", "parentExternalId": "p", "labels": [{"externalId": "l"}]}]}).items[0].spec()
    assert (spec.parent_external_id, spec.labels) == ("p", ["l"])
    listed = parse(AssetsList, {"filter": {"assetSubtreeIds": [{"externalId": "r"}]}, "aggregatedProperties": ["childCount"]})
    assert listed.aggregated() == ["child_count"]
    assert listed.filter is not None and listed.filter.filter().asset_subtree_ids == [Identifier(external_id="r")]
    body = {"items": [{"externalId": "a", "update": {"labels": {"add": [{"externalId": "x"}]}, "description": {"setNull": True}}}]}
    change = parse(AssetsUpdate, body).items[0].change()
    assert change.ident == Identifier(external_id="a")
    assert change.ops["labels"].given == {"add"} and change.ops["labels"].add == ["x"]
    assert change.ops["description"].given == {"set_null"}


def test_schedule_update_names_only_what_it_changes() -> None:
    body = {"items": [{"id": 5, "update": {"cronExpression": {"set": "0 9 * * *"}, "timeZone": {"setNull": True}}}]}
    change = parse(SchedulesUpdate, body).items[0].change()
    assert change.fields == {"cron_expression", "time_zone"}
    assert (change.cron_expression, change.time_zone, change.name) == ("0 9 * * *", None, None)


# -- bad input: a message naming the field in the API's word, the field in the domain's -------------
@pytest.mark.parametrize(
    ("model", "body", "message", "field"),
    [
        (FunctionsCreate, {"items": [{"name": "f"}]}, "items[0].fileId is required.", "file_id"),
        (FunctionsCreate, {"items": [{"name": "f", "fileId": "7"}]}, "items[0].fileId must be an integer, got '7'.", "file_id"),
        (FunctionsCreate, {"items": [{"name": "f", "fileId": True}]}, "items[0].fileId must be an integer, got True.", "file_id"),
        (FunctionsCreate, {"items": [{"name": "f", "fileId": 1, "envVars": {"A": 1}}]}, "items[0].envVars.A must be a string, got 1.", "env_vars"),
        (FunctionsCreate, {"items": []}, "items must not be empty.", None),
        (FunctionsCreate, {"items": [{"name": "a", "fileId": 1}] * 2}, "items may have at most 1 entries.", None),
        (FunctionsCreate, [], "The request body must be a JSON object.", None),
        (CallBody, {"data": [1, 2]}, "data must be a JSON object.", "data"),
        (ByIds, {"items": [{}]}, "items[0]: Each item needs an id or an externalId.", None),
        (ByIds, {"items": [{"id": 2**63}]}, "items[0].id must be at most 9223372036854775807", "id"),
        (ByIds, {"items": [{"id": 1}], "ignoreUnknownIds": "yes"}, "ignoreUnknownIds must be true or false, got 'yes'.", "ignore_unknown_ids"),
        (SessionsCreate, {"items": [{"tokenExchange": 1}]}, "items[0].tokenExchange must be true or false, got 1.", "token_exchange"),
        (SchedulesCreate, {"items": [{"name": "s", "cronExpression": "* * * * *", "data": "x"}]}, "items[0].data must be a JSON object, got 'x'.", "data"),
        (SchedulesUpdate, {"items": [{"id": 1, "update": {"sessionId": {"set": 1}}}]}, "cannot be updated", None),
        (SchedulesUpdate, {"items": [{"id": 1, "update": {"name": "x"}}]}, "items[0].update.name: must be {'set': value} or {'setNull': true}.", "name"),
        (GroupsDelete, {"items": ["x"]}, "items[0] must be an integer, got 'x'.", None),
        (GroupsDelete, {"items": [{"id": True}]}, "items[0] must be an integer, got True.", None),
        (GroupsCreate, {"items": [{"name": "g", "members": "all"}]}, "items[0].members: members must be a list of ids or 'allUserAccounts'.", "members"),
        (FileWrite, {"name": "f", "metadata": {"k": 1}}, "metadata.k must be a string, got 1.", "metadata"),
        (Rows, {"items": [{"key": "k", "columns": [1]}]}, "items[0].columns must be a JSON object.", "columns"),
        # assets refuse what they do not know, as CDF's assets API does
        (AssetsCreate, {"items": [{"name": "a", "colour": "red"}]}, "items[0].colour is not a known property.", "colour"),
        (AssetsList, {"filter": {"colour": "red"}}, "filter.colour is not a known property.", "colour"),
        (AssetsUpdate, {"items": [{"id": 1, "update": {"rootId": {"set": 1}}}]}, "['rootId'] cannot be updated", None),
    ],
)
def test_bad_input_names_the_field(model: type[Any], body: Any, message: str, field: str | None) -> None:
    err = error_of(model, body)
    assert message in err.message
    assert err.field == field


def app_with(model: type[Any]) -> TestClient:
    """A one-route app with the real error handlers: a typed body, as the routers declare
    them, and one read by the endpoint itself (as the call path does)."""
    app = FastAPI()
    install_error_handlers(app)

    def typed(body: Any) -> dict[str, Any]:
        return {"ok": True}

    typed.__annotations__["body"] = model  # the model as the body's type, as routers declare it
    app.post("/typed")(typed)

    @app.post("/parsed")
    async def parsed(request: Request) -> dict[str, Any]:
        parse(model, await request.json())
        return {"ok": True}

    return TestClient(app)


@pytest.mark.parametrize("path", ["/typed", "/parsed"])
def test_bad_input_is_a_400_in_the_cdf_error_shape(path: str) -> None:
    client = app_with(FunctionsCreate)
    res = client.post(path, json={"items": [{"name": "f", "fileId": "seven"}]})
    assert res.status_code == 400
    assert res.json() == {"error": {"code": 400, "message": "items[0].fileId must be an integer, got 'seven'."}}
    ok = client.post(path, json={"items": [{"name": "f", "fileId": 7, "unknownToFnhost": 1}]})
    assert ok.status_code == 200


def test_a_missing_body_says_so() -> None:
    res = app_with(ByIds).post("/typed")
    assert res.status_code == 400
    assert res.json()["error"]["message"] == "The request body is required."


# -- by ids: report missing, then dedupe ----------------------------------------------------------
class Row:
    def __init__(self, id: int) -> None:
        self.id = id


def test_resolve_all_reports_every_missing_one_then_dedupes() -> None:
    names = [
        Identifier(id=1), Identifier(external_id="gone"), Identifier(id=9), Identifier(external_id="one"),
        Identifier(id=9),
    ]
    one = Row(1)
    rows = [one, None, None, one, None]
    with pytest.raises(NotFound) as err:
        resolve_all(names, rows, what="Things", ignore_unknown=False, entry=lambda i: i.entry())
    assert err.value.message == "Things not found."
    assert err.value.missing == [{"externalId": "gone"}, {"id": 9}]
    assert resolve_all(names, rows, what="Things", ignore_unknown=True, entry=lambda i: i.entry()) == [one]
    kept = resolve_all(names, rows, what="Things", ignore_unknown=True, entry=Identifier.entry, dedupe=False)
    assert kept == [one, one]
    assert Identifier(external_id="x").entry(snake_case=True) == {"external_id": "x"}
