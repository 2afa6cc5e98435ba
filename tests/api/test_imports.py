"""CSV imports: upload, header checks, the RQ job through a real worker, per-row errors, resume."""

from __future__ import annotations

import io

import sqlalchemy as sa

from segments import imports, people
from segments.models import ImportStatus, User, UserImport
from tidings import db
from tidings.db import session_scope, utcnow


def upload(api, text: str, name="users.csv"):
    return api.post("/imports/users", data={"file": (io.BytesIO(text.encode()), name)},
                    content_type="multipart/form-data")


def test_import_runs_as_a_job_and_reports_row_errors(api, run_jobs):
    csv_text = (
        "external_id,country,timezone,sms_opt_in,attr.age,attr.zip,attr.vip\n"
        "u1,US,America/New_York,true,31,02139,true\n"
        "u2,XX,Europe/Paris,false,40,,\n"
        "u3,FR,Mars/Base,no,,,\n"
        ",FR,,,,,\n"
        "u5,fr,Europe/Paris,1,2.5,75001,false\n"
    )
    r = upload(api, csv_text)
    assert r.status_code == 202 and r.json["status"] == "queued"
    run_jobs()
    report = api.get(f"/imports/{r.json['id']}").json
    assert report["status"] == "finished"
    assert report["total_rows"] == 5 and report["processed_rows"] == 5
    assert report["imported_rows"] == 2 and report["error_count"] == 3
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(3, "country"), (4, "timezone"), (5, "external_id")]
    u1 = api.get("/users/u1").json
    assert u1["attributes"] == {"age": 31, "zip": "02139", "vip": True} and u1["sms_opt_in"] is True
    assert api.get("/users/u5").json["attributes"] == {"age": 2.5, "zip": 75001, "vip": False}


def test_bad_header_is_refused_at_upload(api):
    for text, needle in [("name,country\nx,US\n", "external_id"),
                         ("external_id,favourite\nx,1\n", "favourite"),
                         ("", "empty")]:
        r = upload(api, text)
        assert r.status_code == 422 and needle in r.json["error"]["message"], r.json
    r = api.post("/imports/users", data={}, content_type="multipart/form-data")
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "file"
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(UserImport)) == 0


def test_non_utf8_upload_is_refused(api):
    r = api.post("/imports/users", data={"file": (io.BytesIO(b"external_id\n\xff\xfe\n"), "x.csv")},
                 content_type="multipart/form-data")
    assert r.status_code == 422


def test_import_job_is_idempotent_and_resumes(api, run_jobs, monkeypatch):
    monkeypatch.setattr(imports, "CHUNK", 2)
    rows = "".join(f"u{i},US\n" for i in range(7))
    r = upload(api, "external_id,country\n" + rows)
    import_id = r.json["id"]
    # Simulate a run that died after two chunks: progress says 4 rows done.
    with session_scope() as s:
        imp = s.get(UserImport, import_id)
        imp.status, imp.processed_rows, imp.imported_rows = ImportStatus.RUNNING, 4, 4
    run_jobs()
    report = api.get(f"/imports/{import_id}").json
    assert report["status"] == "finished" and report["processed_rows"] == 7 and report["imported_rows"] == 7
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 3  # rows 5-7 only: 0-3 "were" done
    imports.run_import(import_id)  # a duplicate job changes nothing
    assert api.get(f"/imports/{import_id}").json["processed_rows"] == 7


def test_other_apps_import_is_404(api, other_api):
    r = upload(api, "external_id\nx\n")
    assert other_api.get(f"/imports/{r.json['id']}").status_code == 404


def test_an_import_whose_job_crashes_is_marked_failed(api, run_jobs, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imports, "upsert_profiles", boom)
    r = upload(api, "external_id\nx\n")
    run_jobs()
    report = api.get(f"/imports/{r.json['id']}").json
    assert report["status"] == "failed"


PROFILE_COLUMNS = ("external_id", "attributes", *people.PROFILE_FIELDS)


def profiles(app_id: int) -> dict[str, tuple]:
    with session_scope() as s:
        rows = s.execute(sa.select(*(User.__table__.c[c] for c in PROFILE_COLUMNS)).where(User.app_id == app_id))
        return {row.external_id: tuple(row) for row in rows}


def test_upsert_profiles_ends_where_upsert_users_does(app_keys, other_api):
    app_a, app_b = app_keys[0], other_api.app_id
    start = [("old1", {"attributes": {"tier": "gold", "age": 30}, "country": "FR", "sms_opt_in": True}),
             ("old2", {"city": "Lyon", "lat": 45.76})]
    changes = [
        ("old1", {"attributes": {"age": 31, "vip": True}, "timezone": "Europe/Paris"}),
        ("new1", {"phone": "+14155550134", "push_opt_in": False, "lon": -122.42}),
        ("old2", {"sms_opt_in": True}),
        ("new2", {}),
        ("new1", {"attributes": {"plan": "pro"}, "language": "en", "push_opt_in": True}),  # repeated: in order
        ("old1", {"attributes": {"age": 32}, "region": ""}),
    ]
    with session_scope() as s:
        for app_id in (app_a, app_b):
            people.upsert_users(s, app_id, start)
    with session_scope() as s:
        result = people.upsert_users(s, app_a, changes)
        assert people.upsert_profiles(s, app_b, changes) == (2, 2)
    assert sum(created for _, created in result.values()) == 2
    a, b = profiles(app_a), profiles(app_b)
    assert a == b and len(a) == 4
    assert a["old1"][1] == {"tier": "gold", "age": 32, "vip": True} and a["new1"][1] == {"plan": "pro"}


def test_upsert_profiles_applies_rows_created_meanwhile_as_updates(app_keys):
    """A user inserted by a concurrent transaction between our look-up and our insert is updated, not lost."""
    import threading

    app_id = app_keys[0]
    other = db.get_engine().connect()
    other.begin()
    other.execute(sa.insert(User).values(app_id=app_id, external_id="raced", attributes={"a": 1}, sms_opt_in=False,
                                         push_opt_in=True, created_at=utcnow(), updated_at=utcnow()))
    outcome = {}

    def upsert():
        with session_scope() as s:
            outcome["counts"] = people.upsert_profiles(s, app_id, [("raced", {"attributes": {"b": 2}, "city": "Oslo"}),
                                                                   ("fresh", {"city": "Rome"})])

    thread = threading.Thread(target=upsert)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # waiting on the uncommitted "raced"
    other.commit()
    other.close()
    thread.join(10)
    assert outcome["counts"] == (1, 1)
    rows = profiles(app_id)
    assert rows["raced"][1] == {"a": 1, "b": 2} and rows["raced"][PROFILE_COLUMNS.index("city")] == "Oslo"
    assert rows["fresh"][PROFILE_COLUMNS.index("city")] == "Rome"


def test_long_language_tag_is_a_row_error_not_a_crash(api, run_jobs):
    tag = "en-" + "-".join(["abcdefgh"] * 4)  # a well-formed tag, wider than the column
    r = upload(api, f"external_id,language\nu1,{tag}\nu2,en\n")
    run_jobs()
    report = api.get(f"/imports/{r.json['id']}").json
    assert report["status"] == "finished" and report["imported_rows"] == 1
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(2, "language")]
    assert api.put("/users/u3", json={"language": tag}).status_code == 422


def test_big_import_validates_in_a_helper_process_with_the_same_outcome(api, run_jobs, monkeypatch,
                                                                         import_helper_pids):
    import os

    pids = import_helper_pids
    monkeypatch.setattr(imports, "CHUNK", 3)
    monkeypatch.setattr(imports, "HELPER_MIN_ROWS", 10)
    rows = [f"u{i},+1415555{i:04d},US,{'Mars/Base' if i % 7 == 3 else 'UTC'},{i}" for i in range(20)]
    rows[5] = "u5,12,US,UTC,5"  # a bad phone
    rows[9] = "u2,,,,99"  # u2 again, later: its attribute changes, the rest stays
    r = upload(api, "external_id,phone,country,timezone,attr.n\n" + "\n".join(rows) + "\n")
    run_jobs()
    assert pids and os.getpid() not in pids  # validated elsewhere
    report = api.get(f"/imports/{r.json['id']}").json
    assert report["status"] == "finished" and report["processed_rows"] == 20
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (5, "timezone"), (7, "phone"), (12, "timezone"), (19, "timezone")]
    assert report["imported_rows"] == 16
    u2 = api.get("/users/u2").json
    assert u2["attributes"] == {"n": 99} and u2["phone"] == "+14155550002" and u2["timezone"] == "UTC"


def test_nul_characters_are_row_errors(api, run_jobs):
    r = upload(api, "external_id,city,attr.note\nu1,Paris,ok\nu\x002,Paris,\nu3,Pa\x00ris,\nu4,,a\x00\n")
    run_jobs()
    report = api.get(f"/imports/{r.json['id']}").json
    assert report["status"] == "finished" and report["imported_rows"] == 1
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(3, "external_id"), (4, "city"), (5, "attributes")]
