"""smtpsink -- a real SMTP server (Debian's aiosmtpd) that records messages.

Answers can be scripted per recipient: a list of SMTP replies to give at RCPT
(e.g. ["451 4.3.0 try later"] then success), or a permanent "550".
"""
import email
import email.policy
import threading
import time

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.rcpt_script = {}   # address -> list of replies to give before accepting
        self.attempts = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
            script = self.rcpt_script.get(address)
            if script:
                reply = script[0]
                if len(script) > 1 or not reply.startswith("5"):
                    script.pop(0)
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                  "raw": envelope.content, "msg": msg})
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.rec = Recorder()
        self.controller = Controller(self.rec, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, addr):
        with self.rec.lock:
            return [m for m in self.rec.messages if addr in m["to"]]

    def wait(self, pred, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = pred(self)
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("smtp sink: condition not met; have %d messages" % len(self.rec.messages))

    def close(self):
        self.controller.stop()
