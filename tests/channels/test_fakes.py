"""The provider fakes answer like the providers, so the channel tests mean something."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from twilio.request_validator import RequestValidator

from channels.transport import ConnectionPool
from tests.fakes import FakeHTTPServer, Response


def _post_form(url: str, path: str, fields: dict, headers: dict | None = None):
    pool = ConnectionPool(url)
    try:
        resp = pool.request("POST", path, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    finally:
        pool.close()
    return resp.status, json.loads(resp.data or b"null"), resp.headers


def _twilio_auth(fake) -> dict:
    token = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _messages_path(fake) -> str:
    return f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"


def test_fake_twilio_answers_201_with_a_message_resource(fake_twilio):
    status, body, headers = _post_form(fake_twilio.url, _messages_path(fake_twilio),
                                       {"To": "+14155550100", "From": "+15005550006", "Body": "hi"},
                                       _twilio_auth(fake_twilio))

    assert status == 201 and headers["content-type"] == "application/json"
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert (body["status"], body["to"], body["direction"]) == ("queued", "+14155550100", "outbound-api")


@pytest.mark.parametrize("fields, code", [
    ({"From": "+15005550006", "Body": "hi"}, 21604),
    ({"To": "+14155550100", "From": "+15005550006"}, 21602),
    ({"To": "+14155550100", "Body": "hi"}, 21603),
    ({"To": "555-0100", "From": "+15005550006", "Body": "hi"}, 21211),
])
def test_fake_twilio_validates_like_twilio(fake_twilio, fields, code):
    status, body, _ = _post_form(fake_twilio.url, _messages_path(fake_twilio), fields, _twilio_auth(fake_twilio))

    assert (status, body["code"]) == (400, code)
    assert fake_twilio.messages == [] and len(fake_twilio.requests) == 1


def test_fake_twilio_checks_basic_auth_and_account(fake_twilio):
    status, body, _ = _post_form(fake_twilio.url, _messages_path(fake_twilio), {"To": "+14155550100"},
                                 {"Authorization": "Basic " + base64.b64encode(b"x:y").decode()})
    assert (status, body["code"]) == (401, 20003)
    status, _, _ = _post_form(fake_twilio.url, "/2010-04-01/Accounts/AC" + "f" * 32 + "/Messages.json",
                              {"To": "+14155550100"}, _twilio_auth(fake_twilio))
    assert status in (401, 404)


def test_fake_twilio_faults_for_a_number_can_be_limited(fake_twilio):
    fake_twilio.fault_for("+14155550100", status=503, times=2)
    fields = {"To": "+14155550100", "From": "+15005550006", "Body": "hi"}

    statuses = [_post_form(fake_twilio.url, _messages_path(fake_twilio), fields, _twilio_auth(fake_twilio))[0]
                for _ in range(3)]

    assert statuses == [503, 503, 201]


def test_status_callback_request_is_signed_as_twilio_signs(fake_twilio, sms_channel):
    from channels.base import OutboundMessage

    url = "https://tidings.example.com/webhooks/twilio/status?d=12"
    result = sms_channel.send(OutboundMessage(12, "+14155550100", {"body": "hi"}, url))

    callback = fake_twilio.status_callback_request(result.provider_id, "delivered")

    assert callback.url == url
    assert callback.form["MessageSid"] == result.provider_id and callback.form["MessageStatus"] == "delivered"
    validator = RequestValidator(fake_twilio.auth_token)
    assert validator.validate(url, callback.form, callback.headers["X-Twilio-Signature"])
    assert not RequestValidator("other-token").validate(url, callback.form, callback.headers["X-Twilio-Signature"])
    failed = fake_twilio.status_callback_request(result.provider_id, "undelivered", error_code=30003)
    assert failed.form["ErrorCode"] == "30003"


def test_status_callback_can_be_posted_to_a_live_server(fake_twilio, sms_channel):
    from channels.base import OutboundMessage

    received = []

    class Receiver(FakeHTTPServer):
        def handle(self, request):
            received.append((request.target, request.form(), request.headers))
            return Response(204)

    with Receiver() as receiver:
        url = f"{receiver.url}/webhooks/twilio/status?d=5"
        result = sms_channel.send(OutboundMessage(5, "+14155550100", {"body": "hi"}, url))
        assert fake_twilio.status_callback_request(result.provider_id, "sent").post() == 204

    [(target, form, headers)] = received
    assert target == "/webhooks/twilio/status?d=5" and form["MessageStatus"] == "sent"
    assert RequestValidator(fake_twilio.auth_token).validate(url, form, headers["x-twilio-signature"])


def test_fake_fcm_refuses_a_bad_grant_and_an_unknown_bearer(fake_fcm, service_account_path):
    status, body, _ = _post_form(fake_fcm.url, "/token", {"grant_type": "password", "assertion": "x"})
    assert status == 400 and body["error"] == "unsupported_grant_type"
    status, body, _ = _post_form(fake_fcm.url, "/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b.c"})
    assert status == 400 and body["error"] == "invalid_grant"

    pool = ConnectionPool(fake_fcm.url)
    resp = pool.request("POST", "/v1/projects/tidings-test/messages:send", b'{"message": {"token": "t"}}',
                        {"Authorization": "Bearer nope", "Content-Type": "application/json"})
    pool.close()
    assert resp.status == 401 and json.loads(resp.data)["error"]["status"] == "UNAUTHENTICATED"


def test_fake_fcm_error_bodies_carry_the_fcm_error_code(fake_fcm, push_channel):
    from channels.base import OutboundMessage

    fake_fcm.fault_next(1, code="UNREGISTERED")
    push_channel.send_batch([OutboundMessage(1, "tok", {"title": "t"})])

    [record] = fake_fcm.requests
    assert record.status == 404 and record.name is None


def test_fake_serves_other_paths_404(fake_fcm):
    pool = ConnectionPool(fake_fcm.url)
    try:
        assert pool.request("GET", "/nothing/here").status == 404
    finally:
        pool.close()


def test_fake_connections_have_nagle_off(fake_twilio, sms_channel):
    import socket

    from channels.base import OutboundMessage

    sms_channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))

    sockets = [w.get_extra_info("socket") for w in list(fake_twilio._writers)]  # noqa: SLF001
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


# -- the HTTP server under the fakes ---------------------------------------------------------------


class _Echo(FakeHTTPServer):
    """Answers with the body it got; `/slow` answers 0.3 s late."""

    def handle(self, request):
        if request.path == "/boom":
            raise RuntimeError("a bug in the fake")
        return Response(200, request.body or request.target.encode(), delay=0.3 if request.path == "/slow" else 0.0)


def _exchange(url: str, raw: bytes, answers: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Send `raw` on one connection and read `answers` responses: (status, body) each."""
    import socket

    from channels.transport import _read_response

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        rfile = sock.makefile("rb")
        out = []
        for _ in range(answers):
            response, _ = _read_response(rfile, "POST")
            out.append((response.status, response.data))
        rfile.close()
    return out


def test_fake_server_answers_pipelined_requests_in_order_even_behind_a_late_one():
    with _Echo() as server:
        raw = (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
               b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n2;x=1\r\n!!\r\n0\r\n\r\n")
        answers = _exchange(server.url, raw, 3)

    assert answers == [(200, b"/slow"), (200, b"one"), (200, b"two!!")]


def test_fake_server_reads_a_body_that_arrives_in_pieces_and_says_100_continue():
    import socket

    from channels.transport import _read_response

    with _Echo() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            rfile = sock.makefile("rb")
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
            assert rfile.readline() == b"HTTP/1.1 100 Continue\r\n" and rfile.readline() == b"\r\n"
            sock.sendall(b"01234")
            sock.sendall(b"56789")
            response, _ = _read_response(rfile, "POST")
            rfile.close()

    assert (response.status, response.data) == (200, b"0123456789")


def test_fake_server_refuses_malformed_and_oversized_heads_and_survives_its_own_bugs():
    with _Echo() as server:
        bad = _exchange(server.url, b"POST /x HTTP/1.1\r\n bad header\r\n\r\n", 1)
        huge = _exchange(server.url, b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 1)
        bug = _exchange(server.url, b"GET /boom HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n", 2)
        errors = list(server.errors)

    assert bad[0][0] == 400 and huge[0][0] == 431
    assert bug[0][0] == 500 and bug[1] == (200, b"/after")
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
