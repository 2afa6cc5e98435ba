"""CSV imports: upload, header checks, the RQ job through a real worker, per-row errors, resume."""

from __future__ import annotations

import io

import sqlalchemy as sa

from segments import imports
from segments.models import ImportStatus, User, UserImport
from tidings.db import session_scope


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
