"""smtp_peer.py -- a real SMTP server (Debian's aiosmtpd) for the C unit tests.

    python3 smtp_peer.py serve DIR   listen on 127.0.0.1, a free port, written to
                                     DIR/port once ready; every accepted message
                                     goes to DIR/msg-N.eml (raw) and DIR/msg-N.json
                                     (envelope: mail_from, rcpt_tos, peer port).
                                     DIR/plan holds failures to inject, one per
                                     line, "STAGE CODE TEXT" (STAGE MAIL, RCPT or
                                     DATA), each used once, in order; a message
                                     refused at DATA is kept in DIR/rejected-N.eml.
    python3 smtp_peer.py parse FILE  prints, as JSON, what Python's email parser
                                     reads in a message: headers (decoded), MIME
                                     structure, decoded parts.
"""
import asyncio
import email
import email.policy
import json
import os
import socket
import sys


class Handler:
    def __init__(self, d):
        self.dir = d
        self.n = 0

    def take(self, stage):
        path = os.path.join(self.dir, "plan")
        try:
            with open(path) as f:
                lines = [l.rstrip("\n") for l in f if l.strip()]
        except FileNotFoundError:
            return None
        for i, line in enumerate(lines):
            st, rest = line.split(" ", 1)
            if st == stage:
                del lines[i]
                with open(path + ".tmp", "w") as f:
                    f.write("".join(l + "\n" for l in lines))
                os.replace(path + ".tmp", path)
                return rest
        return None

    async def handle_MAIL(self, server, session, envelope, address, options):
        c = self.take("MAIL")
        if c:
            return c
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        c = self.take("RCPT")
        if c:
            return c
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        c = self.take("DATA")
        if c:
            # kept, so a test can compare what the refused attempt sent
            self.rejected = getattr(self, "rejected", 0) + 1
            with open(os.path.join(self.dir, "rejected-%d.eml" % self.rejected), "wb") as f:
                f.write(envelope.original_content)
            return c
        self.n += 1
        base = os.path.join(self.dir, "msg-%d" % self.n)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "peer": session.peer[1]}, f)
        os.replace(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: queued as Q%d" % self.n


def serve(d):
    from aiosmtpd.smtp import SMTP
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    handler = Handler(d)
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname="peer.test", data_size_limit=1 << 20),
        sock=sock))
    with open(os.path.join(d, "port.tmp"), "w") as f:
        f.write(str(sock.getsockname()[1]))
    os.replace(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
    try:
        loop.run_forever()
    finally:
        srv.close()


def parse(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = {"headers": {}, "defects": [str(d) for d in msg.defects],
           "content_type": msg.get_content_type(), "parts": [],
           "max_line": max(len(l) for l in raw.split(b"\r\n")),
           "bare_lf": b"\n" in raw.replace(b"\r\n", b""),
           "eight_bit": any(b > 127 for b in raw)}
    for k in msg.keys():
        out["headers"][k] = str(msg[k])
    for part in msg.walk():
        if part.is_multipart():
            continue
        out["parts"].append({
            "type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "cte": part.get("Content-Transfer-Encoding"),
            "content": part.get_content().replace("\r\n", "\n"),
            "defects": [str(d) for d in part.defects]})
    from_ = msg["From"]
    out["from_addr"] = from_.addresses[0].addr_spec if from_ else None
    out["from_name"] = from_.addresses[0].display_name if from_ else None
    to = msg["To"]
    out["to_addr"] = to.addresses[0].addr_spec if to else None
    out["to_name"] = to.addresses[0].display_name if to else None
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        parse(sys.argv[2])
