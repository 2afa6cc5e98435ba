"""The fast validators accept only what the marshmallow schemas accept, and load it identically."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from segments import fastpath, imports
from segments.schemas import EventsBatchSchema, UserFieldsSchema, UsersBatchSchema

texts = st.one_of(st.text(max_size=8), st.text(min_size=250, max_size=260), st.sampled_from(["", "x" * 256]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), texts)
times = st.one_of(st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02T03:04:05", "2026-01-02T03:04:05+02:00",
                                   "2999-01-01T00:00:00Z", "yesterday", "2026-13-01T00:00:00Z", ""]), scalars)
props = st.dictionaries(texts, scalars, max_size=3)
event = st.fixed_dictionaries({}, optional={
    "user": st.one_of(texts, scalars), "name": st.one_of(texts, scalars), "properties": st.one_of(props, scalars),
    "time": times, "id": st.one_of(texts, scalars), "extra": scalars})
names = st.one_of(st.sampled_from(["age", "tier", "_x", "bad name", "1st", "a" * 65]), texts)
user = st.fixed_dictionaries({}, optional={
    "attributes": st.one_of(st.dictionaries(names, scalars, max_size=3), scalars),
    "region": st.one_of(texts, scalars), "city": st.one_of(texts, scalars),
    "timezone": st.one_of(st.sampled_from(["Europe/Paris", "UTC", "Mars/Base", "europe/paris"]), scalars),
    "sms_opt_in": scalars, "push_opt_in": scalars,
    "lat": st.one_of(st.floats(-100, 100), scalars), "lon": st.one_of(st.floats(-200, 200), scalars),
    "phone": st.one_of(st.sampled_from(["+14155550134", "415 555 0134", "12", "+33 1 23 45 67 89", ""]), scalars),
    "country": st.one_of(st.sampled_from(["US", "fr", "XX", "usa"]), scalars),
    "language": st.one_of(st.sampled_from(["en", "pt-BR", "english!", "e"]), scalars), "extra": scalars})


def agree(fast, schema, data):
    if fast is None:
        return
    loaded = schema.load(data)  # must not raise: the fast path accepted it
    assert loaded == fast


@settings(max_examples=600, deadline=None)  # a loaded CI box is slow, not wrong
@given(st.lists(event, min_size=0, max_size=3))
def test_events_fast_path_agrees_with_schema(events):
    events_agree({"events": events})


def events_agree(data):
    """What the events fast path accepts, the schema loads the same; the rest the schema decides.

    Also given the JSON text the batch came in as, escaped to ASCII or not: with it the fast path
    skips its NUL checks when that text cannot hold a NUL, and must still agree.
    """
    for body in (None, json.dumps(data).encode(), json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        fast = fastpath.events_batch(data, body)
        if fast is not None:
            assert EventsBatchSchema().load(data)["events"] == fast
        else:
            try:
                EventsBatchSchema().load(data)
            except ValidationError:
                pass


def test_a_body_that_cannot_hold_a_nul():
    assert fastpath.may_hold_nul(None)
    assert fastpath.may_hold_nul(json.dumps({"a": "x\x00"}).encode())
    assert fastpath.may_hold_nul(json.dumps({"a": "x\x00"}, ensure_ascii=False).encode())
    assert fastpath.may_hold_nul(json.dumps({"a": "x"}).encode("utf-16"))
    assert not fastpath.may_hold_nul(json.dumps({"a": "x\\u0001 \u00e9"}).encode())


# Mostly well-formed events, so that the fast path's acceptance (not only its refusals) is tested.
names_ok = st.sampled_from(["u1", "open", "x" * 255, "\u00e9v\u00e9nement", "u2", "buy", "x" * 256, "", "u\x00"])
good_times = st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456", "2026-01-02T03:04:05+02:00",
                              "2026-01-02", "2026-01-02T03:04:05+0200", "2999-01-01T00:00:00Z"])
plausible_event = st.fixed_dictionaries(
    {"user": names_ok, "name": names_ok},
    optional={"properties": st.dictionaries(st.sampled_from(["a", "amount", "b", "k" * 256, "k\x00"]),
                                            st.one_of(scalars, st.just("v\x00")), max_size=2),
              "time": st.one_of(good_times, good_times, times), "id": names_ok})


@settings(max_examples=1500, deadline=None)
@given(st.lists(plausible_event, min_size=1, max_size=3))
def test_events_fast_path_agrees_with_schema_on_plausible_batches(events):
    events_agree({"events": events})


@settings(max_examples=600, deadline=None)  # a loaded CI box is slow, not wrong
@given(user)
def test_user_fast_path_agrees_with_schema(data):
    agree(fastpath.user_fields(data), UserFieldsSchema(), data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(lambda ext, u: {"external_id": ext, **u}, st.one_of(texts, scalars), user), max_size=3))
def test_users_batch_fast_path_agrees_with_schema(users):
    data = {"users": users}
    fast = fastpath.users_batch(data)
    if fast is not None:
        assert UsersBatchSchema().load(data)["users"] == fast


def test_fast_path_takes_the_common_shapes():
    assert fastpath.events_batch({"events": [{"user": "u", "name": "open", "time": "2026-01-01T00:00:00Z",
                                              "properties": {"a": 1}, "id": "e1"}]})
    assert fastpath.users_batch({"users": [{"external_id": "u", "attributes": {"tier": "gold"},
                                            "timezone": "Europe/Paris", "sms_opt_in": True}]})


CSV_COLUMNS = ["phone", "language", "timezone", "country", "region", "city", "lat", "lon", "sms_opt_in", "push_opt_in",
               "attr.age", "attr.tier"]
cells = {
    "phone": st.sampled_from(["+14155550134", " +1 415 555 0134 ", "415 555 0134", "0612345678", "+3361234567",
                              "12", "+1" + "5" * 40, "  "]),
    "language": st.sampled_from(["en", "pt-BR", " fr ", "english!", "e", " "]),
    "timezone": st.sampled_from(["Europe/Paris", " UTC ", "Mars/Base", "europe/paris", " "]),
    "country": st.sampled_from(["US", "fr", " GB ", "XX", "usa", "\u212aR", " "]),
    "region": st.one_of(st.sampled_from(["CA", " Bavaria ", "x" * 129, " "]), st.text(max_size=4)),
    "city": st.one_of(st.sampled_from(["Paris", "x" * 128 + " ", " "]), st.text(max_size=4)),
    "lat": st.sampled_from(["48.85", "-90", "90.0001", "nan", "inf", " 1e1 ", "1_0", "abc", "-0"]),
    "lon": st.sampled_from(["2.35", "180", "-180.5", "1e400", "x"]),
    "sms_opt_in": st.sampled_from(["true", " Yes ", "0", "FALSE", "maybe", " "]),
    "push_opt_in": st.sampled_from(["1", "no", "n"]),
    "attr.age": st.sampled_from(["31", "2.5", "007", "true", "x", " "]),
    "attr.tier": st.text(max_size=3),
}


@st.composite
def csv_rows(draw):
    columns = draw(st.lists(st.sampled_from(CSV_COLUMNS), unique=True, max_size=len(CSV_COLUMNS)))
    header = draw(st.permutations(["external_id", *columns]))
    row = [draw(st.one_of(st.just(""), st.sampled_from(["u1", " u2 ", " ", "x" * 256]), st.text(max_size=3)))
           if column == "external_id" else draw(st.one_of(st.just(""), cells[column]))
           for column in header]
    if draw(st.integers(0, 20)) == 0:
        row = row[:-1] if row and draw(st.booleans()) else [*row, "extra"]
    return header, row


@settings(max_examples=1500, deadline=None)
@given(csv_rows())
def test_csv_fast_loader_agrees_with_row_to_fields_and_schema(case):
    header, row = case
    fast = imports.fast_loader(header)(row)
    if fast is None:
        return
    external_id, fields = imports.row_to_fields(header, row)  # must not raise: the fast path accepted the row
    assert (external_id, UserFieldsSchema().load(fields)) == fast


def test_csv_fast_loader_takes_plainly_valid_rows():
    header = ["external_id", "phone", "country", "timezone", "language", "lat", "sms_opt_in", "attr.age"]
    loaded = imports.fast_loader(header)(["u1", "0612345678", "fr", "Europe/Paris", "fr", "48.85", "yes", "31"])
    assert loaded == ("u1", {"phone": "+33612345678", "country": "FR", "timezone": "Europe/Paris", "language": "fr",
                             "lat": 48.85, "sms_opt_in": True, "attributes": {"age": 31}})
    assert imports.fast_loader(header)(["u1", "", "", "", "", "", "", ""]) == ("u1", {})
    assert imports.fast_loader(header)(["u1", "12", "", "", "", "", "", ""]) is None  # the schema words the error
