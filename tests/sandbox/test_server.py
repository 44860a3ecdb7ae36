"""The HTTP side: malformed requests get a clear 4xx, many concurrent requests are all answered correctly."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from .helpers import assert_alive, http, post_json, run


def raw_request(served, data: bytes) -> tuple[int, dict]:
    """Send raw bytes to the server; return the status and JSON body of its answer."""
    host, port = served.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            received += conn.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(body) < length:
            body += conn.recv(65536)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"language": "python"}, "code"),
        ({"code": 123, "language": "python"}, "code"),
        ({"code": "print(1)"}, "language"),
        ({"code": "print(1)", "language": "klingon"}, "language"),
        ({"code": "print(1)", "language": "python", "run_timeout": "ten"}, "run_timeout"),
        ({"code": "print(1)", "language": "python", "run_timeout": -1}, "run_timeout"),
        ({"code": "print(1)", "language": "python", "run_timeout": True}, "run_timeout"),
        ({"code": "print(1)", "language": "python", "compile_timeout": [1]}, "compile_timeout"),
        ({"code": "print(1)", "language": "python", "memory_limit_MB": 1.5}, "memory_limit_MB"),
        ({"code": "print(1)", "language": "python", "stdin": 5}, "stdin"),
        ({"code": "print(1)", "language": "python", "files": ["a"]}, "files"),
        ({"code": "print(1)", "language": "python", "files": {"a.txt": "not base64!"}}, "files"),
        ({"code": "print(1)", "language": "python", "files": {"/etc/passwd": ""}}, "files"),
        ({"code": "print(1)", "language": "python", "files": {"../x": ""}}, "files"),
        ({"code": "print(1)", "language": "python", "fetch_files": "out.txt"}, "fetch_files"),
        ({"code": "print(1)", "language": "python", "fetch_files": ["../../etc/shadow"]}, "fetch_files"),
        ({"code": "print(1)", "language": "python", "args": [1]}, "args"),
    ],
)
def test_bad_fields_get_422_naming_the_field(served, payload, field):
    status, body = post_json(served.url, payload)
    assert status == 422, body
    assert body["detail"][0]["loc"] == ["body", field]
    assert body["detail"][0]["msg"]


@pytest.mark.parametrize("data", [b"{not json", b"", b"[1, 2]", b'"code"', b"\xff\xfe"])
def test_bad_json_gets_422(served, data):
    status, body = http("POST", served.url, data)
    assert status == 422
    assert body["detail"][0]["type"] in ("json_invalid", "model_type")


def test_a_field_named_twice_gets_422_naming_it(served):
    """Which of two ``code`` fields would run is unclear: refused, not last-wins."""
    status, body = http("POST", served.url, b'{"code": "print(1)", "language": "python", "code": "print(2)"}')
    assert status == 422 and body["detail"][0]["loc"] == ["body", "code"]
    assert "duplicate key 'code'" in body["detail"][0]["msg"]


def test_a_body_shorter_than_its_length_gets_400_and_a_stalled_one_408(served, monkeypatch):
    """The server reads a body within ``READ_TIMEOUT_S`` in all; a body cut short or never finished frees the
    worker with an answer instead of waiting on it."""
    from spo_helpers.sandbox import server as server_module

    host, port = served.base.removeprefix("http://").split(":")
    head = b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"

    def answer(conn) -> tuple[int, dict]:
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        status_line, _, rest = received.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])

    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b'{"code": "print(1)"')
        conn.shutdown(socket.SHUT_WR)  # the client is done: 19 of 100 bytes
        status, body = answer(conn)
    assert status == 400 and "after 19 of its 100 bytes" in body["detail"]

    monkeypatch.setattr(server_module, "READ_TIMEOUT_S", 1.0)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b'{"code": ')
        status, body = answer(conn)
    assert status == 408 and "did not arrive in 1 s" in body["detail"]


def test_oversized_body_gets_413_without_being_read(served):
    head = f"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {10**9}\r\n\r\n"
    status, body = raw_request(served, head.encode())
    assert status == 413 and "limit" in body["detail"]


def test_missing_length_and_chunked_bodies_get_411(served):
    status, _ = raw_request(served, b"POST /run_code HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411
    chunked = b"POST /run_code HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    status, _ = raw_request(served, chunked)
    assert status == 411


def test_wrong_paths_and_methods(served):
    assert http("GET", served.url)[0] == 405
    assert http("PUT", served.url, b"{}")[0] == 405
    assert http("POST", served.base + "/nope", b"{}")[0] == 404
    assert http("GET", served.base + "/nope")[0] == 404
    assert http("GET", served.base + "/v1/ping") == (200, "pong")


def test_health_describes_isolation(served):
    status, health = http("GET", served.base + "/health")
    assert status == 200
    assert health["workers"] == served.limits.workers and health["languages"] == ["python"]
    assert health["isolation"]["namespaces"] is True
    assert http("GET", served.base + "/")[1]["status"] == "ok"


def test_known_but_unsupported_language_is_a_sandbox_error(served):
    status, body = post_json(served.url, {"code": "int main(){}", "language": "cpp"})
    assert status == 200
    assert body["status"] == "SandboxError" and body["run_result"] is None
    assert "not supported" in body["message"]


def test_response_has_sandbox_fusion_fields(served):
    body = run(served, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert set(body) == {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
    assert set(body["run_result"]) == {"status", "execution_time", "return_code", "stdout", "stderr"}
    assert body["status"] == "Failed" and body["message"] == "" and body["compile_result"] is None
    assert body["run_result"] | {"execution_time": None} == {
        "status": "Finished",
        "execution_time": None,
        "return_code": 3,
        "stdout": "out\n",
        "stderr": "err\n",
    }


def test_syntax_error_and_odd_text_are_just_failed_runs(served):
    body = run(served, "def broken(:\n")
    assert body["status"] == "Failed" and "SyntaxError" in body["run_result"]["stderr"]
    body = run(
        served, "print('\\udcff'.encode('utf-8', 'surrogateescape'))\nimport sys\nsys.stdout.buffer.write(b'\\xff\\n')"
    )
    assert body["status"] == "Success"
    assert sorted(body["run_result"]["stdout"].splitlines()) == ["b'\\xff'", "\ufffd"]  # undecodable -> U+FFFD


def test_sixteen_concurrent_requests_with_two_workers(served):
    answers: dict[int, dict] = {}

    def one(i: int) -> None:
        answers[i] = run(served, f"import time\ntime.sleep(0.2)\nprint({i} * {i})")

    start = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    took = time.monotonic() - start
    assert sorted(answers) == list(range(16))
    for i, body in answers.items():
        assert body["status"] == "Success", body
        assert body["run_result"]["stdout"] == f"{i * i}\n"
    assert took >= 16 * 0.2 / served.limits.workers * 0.95  # never more than `workers` at once
    assert_alive(served)
