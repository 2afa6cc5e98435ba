"""CSV import internals: slicing the file without parsing it, staging rows for COPY, helpers vs in place."""

from __future__ import annotations

import csv
import io
import uuid
from unittest import mock

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import imports, people
from segments.models import User, UserImport
from tidings.db import session_scope

# ---- plain_lines: a chunk of a file without quotes is a slice of its text --------------------

csv_texts = st.text(alphabet='ab ,\n\r"\x00\u00e9\u2028\x0b\x1c', max_size=60)


def chunked_rows(text: str, done: int, lines) -> list:
    out = []
    for start, count, chunk in imports._chunks(text, done, lines):
        rows = list(csv.reader(io.StringIO(chunk))) if isinstance(chunk, str) else chunk
        assert len(rows) == count and start == done + len(out)
        out += rows
    return out


@settings(max_examples=3000, deadline=None)
@given(csv_texts, st.integers(1, 4), st.integers(0, 5))
def test_slices_of_a_plain_file_read_as_the_whole_file_does(text, chunk, done):
    assert list(imports._lines(text)) == list(io.StringIO(text))  # what check_header reads the header from
    lines = imports.plain_lines(text)
    if lines is None:
        return
    records = list(csv.reader(io.StringIO(text)))
    assert len(lines) == max(len(records), 1)  # an empty text is one (empty) line and no record
    with mock.patch.object(imports, "CHUNK", chunk):
        assert chunked_rows(text, done, lines) == records[1:][done:]
        assert chunked_rows(text, done, None) == records[1:][done:]


def test_which_files_are_sliced():
    assert imports.plain_lines("external_id,city\nu1,Paris\r\nu2,\n\n") == [0, 17, 27, 31]
    assert imports.plain_lines("external_id\nu1\n") == [0, 12]
    assert imports.plain_lines("external_id\nu1") == [0, 12]
    assert imports.plain_lines('external_id,city\nu1,"Paris, France"\n') is None  # quoted: parsed
    assert imports.plain_lines("external_id\nu1\rx\n") is None  # csv refuses a lone CR: it says so itself
    with mock.patch.object(csv, "field_size_limit", lambda: 10):
        assert imports.plain_lines("external_id\nu1\n") is None  # a line reaching the limit: csv words the error


def test_field_over_the_limit_fails_before_anything_is_written():
    text = "external_id,city\n" + "u1,Paris\n" * 3 + "u2," + "x" * (csv.field_size_limit() + 1) + "\n"
    assert imports.plain_lines(text) is None
    with pytest.raises(csv.Error):
        sum(1 for _ in imports._rows(text))


# ---- stage_profiles + COPY end where upsert_users does --------------------------------------

tricky = st.text(alphabet='ab\t\n\r\\N"\' \u00e9\U0001f600\u2028\x01{}', max_size=6)
profile = st.fixed_dictionaries({}, optional={
    "phone": st.text(alphabet="+0123456789\\\t", max_size=16), "language": tricky, "timezone": tricky,
    "country": st.text(alphabet="AB\t\\", max_size=2), "region": tricky, "city": tricky,
    "lat": st.floats(-90, 90), "lon": st.floats(-180, 180), "sms_opt_in": st.booleans(), "push_opt_in": st.booleans(),
    "attributes": st.dictionaries(st.sampled_from(["a", "b_1", "tier"]), st.one_of(
        tricky, st.integers(-10**17, 10**17), st.floats(allow_nan=False, allow_infinity=False), st.booleans()),
        max_size=3),
})
changes = st.lists(st.tuples(st.sampled_from(["u1", "u2", "u\t3", "u\\N", "\\N", "u\n5"]), profile), max_size=8)
COLUMNS = ("external_id", "attributes", *people.PROFILE_FIELDS)


def profiles(app_id: int, prefix: str) -> dict[str, tuple]:
    with session_scope() as s:
        rows = s.execute(sa.select(*(User.__table__.c[c] for c in COLUMNS))
                         .where(User.app_id == app_id, User.external_id.startswith(prefix, autoescape=True)))
        return {row.external_id[len(prefix):]: tuple(row)[1:] for row in rows}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=changes, batch=changes)
def test_staged_profiles_end_where_upsert_users_does(app_keys, other_api, start, batch):
    app_a, app_b = app_keys[0], other_api.app_id
    prefix = uuid.uuid4().hex[:8]
    start = [(prefix + ext, data) for ext, data in start]
    batch = [(prefix + ext, data) for ext, data in batch]
    with session_scope() as s:
        for app_id in (app_a, app_b):
            people.upsert_users(s, app_id, start)
    with session_scope() as s:
        result = people.upsert_users(s, app_a, batch)
        staged = people.stage_profiles(batch)
        assert staged is not None
        created = sum(1 for _, was_created in result.values() if was_created)
        assert people.upsert_profiles(s, app_b, staged) == (created, len(result) - created)
    assert profiles(app_a, prefix) == profiles(app_b, prefix)


def test_profiles_with_nulls_or_devices_are_not_staged():
    assert people.stage_profiles([("u1", {"city": None})]) is None
    assert people.stage_profiles([("u1", {"attributes": {"a": None}})]) is None
    assert people.stage_profiles([("u1", {"devices": [{"id": "d"}]})]) is None
    assert people.stage_profiles([("u1", {"city": "Oslo"}), ("u1", {"lat": -0.0})]).users == 1


def test_two_staged_batches_in_one_transaction(app_keys):
    app_id = app_keys[0]
    with session_scope() as s:
        assert people.upsert_profiles(s, app_id, people.stage_profiles([("a", {"city": "Oslo"})])) == (1, 0)
        assert people.upsert_profiles(s, app_id, [("a", {"lat": 1.5}), ("b", {})]) == (1, 1)
    assert profiles(app_id, "")["a"][people.PROFILE_FIELDS.index("city") + 1] == "Oslo"


# ---- the whole job: helper processes and in place, sliced and parsed, agree -----------------

def csv_file(quoted: bool, newline: str) -> str:
    rows = ["external_id,phone,country,timezone,city,lat,attr.n,attr.tag"]
    for i in range(41):
        city = ('"Paris, ""centre""\nnorth"' if i % 5 == 0 else "Paris") if quoted else "Lyon\\x"
        phone = [f"+1415555{i:04d}", f"415 555 {i:04d}", "12", "", "+33612345678"][i % 5]
        zone = "Mars/Base" if i % 9 == 4 else "UTC"
        rows.append(f"u{i % 17},{phone},US,{zone},{city},{i / 3:.4f},{i},t\tab")
    rows.insert(20, "u99,,XX")  # wrong cell count
    return newline.join(rows) + newline


def run_import(api, run_jobs, text: str, done: int = 0) -> dict:
    r = api.post("/imports/users", data={"file": (io.BytesIO(text.encode()), "u.csv")},
                 content_type="multipart/form-data")
    import_id = r.json["id"]
    if done:  # a run that stopped after `done` rows (none written here: the outcome covers only the rest)
        with session_scope() as s:
            s.get(UserImport, import_id).processed_rows = done
    run_jobs()
    report = api.get(f"/imports/{import_id}").json
    return {k: report[k] for k in ("status", "total_rows", "processed_rows", "imported_rows", "error_count", "errors")}


@pytest.mark.parametrize("quoted,newline,done", [(False, "\n", 0), (False, "\r\n", 7), (True, "\n", 0),
                                                 (True, "\r\n", 9)])
def test_helpers_and_in_place_imports_agree(api, other_api, run_jobs, monkeypatch, import_helper_pids,
                                            quoted, newline, done):
    import os

    pids = import_helper_pids
    text = csv_file(quoted, newline)
    assert (imports.plain_lines(text) is None) == quoted
    monkeypatch.setattr(imports, "CHUNK", 4)
    monkeypatch.setattr(imports, "HELPER_MIN_ROWS", 10)
    helped = run_import(api, run_jobs, text, done)
    assert len(pids) == imports.HELPERS and os.getpid() not in pids
    monkeypatch.setattr(imports, "HELPER_MIN_ROWS", 10**9)
    monkeypatch.setattr(imports, "CHUNK", 5000)
    alone = run_import(other_api, run_jobs, text, done)
    assert helped == alone
    assert helped["status"] == "finished" and helped["processed_rows"] == helped["total_rows"] == 42
    assert helped["error_count"] == len(helped["errors"]) > 0
    assert profiles(api.app_id, "") == profiles(other_api.app_id, "") != {}


def test_a_failing_write_stops_the_job_and_its_helpers(api, run_jobs, monkeypatch):
    calls = []

    def failing(session, app_id, changes, now=None):
        calls.append(app_id)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return people.upsert_profiles(session, app_id, changes, now)

    monkeypatch.setattr(imports, "upsert_profiles", failing)
    monkeypatch.setattr(imports, "CHUNK", 2)
    monkeypatch.setattr(imports, "HELPER_MIN_ROWS", 10)
    text = "external_id,city\n" + "".join(f"u{i},Oslo\n" for i in range(40))
    report = run_import(api, run_jobs, text)  # the queue to the writer is full when it fails: no wait for ever
    assert report["status"] == "failed" and report["processed_rows"] == 4 and len(calls) == 3
