"""The fast validators accept only what the marshmallow schemas accept, and load it identically."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from segments import fastpath
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


@settings(max_examples=600)
@given(st.lists(event, min_size=0, max_size=3))
def test_events_fast_path_agrees_with_schema(events):
    data = {"events": events}
    fast = fastpath.events_batch(data)
    if fast is not None:
        assert EventsBatchSchema().load(data)["events"] == fast
    else:
        try:
            EventsBatchSchema().load(data)
        except ValidationError:
            pass


@settings(max_examples=600)
@given(user)
def test_user_fast_path_agrees_with_schema(data):
    agree(fastpath.user_fields(data), UserFieldsSchema(), data)


@settings(max_examples=300)
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
