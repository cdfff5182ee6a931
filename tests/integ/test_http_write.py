"""Answers reach a slow reader whole and in order.

The server writes an answer straight to the socket when nothing is queued
(uv_try_write) and queues the rest; these tests make the socket buffer fill
mid-answer (a small receive buffer, a client that reads late) so that both
paths and the hand-over between them run: pipelined requests for a large
profile, and pipelined ingest requests interleaved with them. Each answer must
arrive complete, in request order, and the connection must keep working.
"""
import base64
import json
import socket
import time
import unittest
import uuid

from nudgetest import NudgeServer


def read_responses(sock, n, timeout=20):
    """Reads n HTTP/1.1 responses (Content-Length framed) from sock."""
    sock.settimeout(timeout)
    data, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed after %d answers" % len(out))
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, v = line.split(":", 1)
            if k.strip().lower() == "content-length":
                length = int(v)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed mid-answer")
            rest += chunk
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


class SlowReaderTest(unittest.TestCase):
    def test_large_pipelined_answers_whole_and_in_order(self):
        with NudgeServer() as s:
            u = "slow-" + uuid.uuid4().hex[:10]
            big = "x" * 3000
            for i in range(60):
                r = s.post("/v1/track", {"userId": u, "event": "E%d" % i,
                                         "properties": {"pad": big, "i": i}})
                self.assertEqual(r.status, 200, r)
            want = s.wait_profile("user_id", u, lambda p: len(p["events"]) == 60)
            self.assertGreater(len(json.dumps(want)), 60000)

            admin = "Bearer " + s.admin_key
            wk = "Basic " + base64.b64encode((s.write_key + ":").encode()).decode()
            get = ("GET /v1/profiles/user_id/%s HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: %s\r\n\r\n" % (u, admin)).encode()

            def track(i):
                body = json.dumps({"userId": u + "-other", "event": "P%d" % i}).encode()
                return (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/json\r\nAuthorization: " + wk.encode() +
                        b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", s.port))
            try:
                # 45 requests (30 large reads, ~6 MB, more than a socket buffer holds)
                # and small ingest answers mixed.
                reqs = [get if i % 3 else track(i) for i in range(45)]
                sock.sendall(b"".join(reqs))
                time.sleep(1.0)  # let the server's send buffer fill
                answers = read_responses(sock, len(reqs))
                for i, (status, body) in enumerate(answers):
                    self.assertEqual(status, 200, (i, body[:200]))
                    doc = json.loads(body)
                    if i % 3:
                        self.assertEqual(doc["traits"], want["traits"])
                        self.assertEqual(len(doc["events"]), 60, i)
                    else:
                        self.assertEqual(doc, {"success": True}, i)
                # The connection still serves after the backlog.
                sock.sendall(get)
                (status, body), = read_responses(sock, 1)
                self.assertEqual(status, 200)
                self.assertEqual(len(json.loads(body)["events"]), 60)
            finally:
                sock.close()
            s.stop()
            s.check_sanitizers()


if __name__ == "__main__":
    unittest.main()
