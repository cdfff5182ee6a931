"""smtp_peer.py -- a real SMTP server (Debian's aiosmtpd) for the C unit tests.

    python3 smtp_peer.py serve DIR   listen on 127.0.0.1, a free port, written to
                                     DIR/port once ready; every accepted message
                                     goes to DIR/msg-N.eml (raw) and DIR/msg-N.json
                                     (envelope: mail_from, rcpt_tos, peer port).
                                     DIR/plan holds failures to inject, one per
                                     line, "STAGE CODE TEXT" (STAGE MAIL, RCPT or
                                     DATA), each used once, in order; a message
                                     refused at DATA is kept in DIR/rejected-N.eml.
                                     Options: --tls starttls|tls (a self-signed
                                     certificate for 127.0.0.1 is made with the
                                     openssl tool, DIR/cert.pem; STARTTLS is then
                                     required, or the listener is TLS from the
                                     first byte) and --auth USER:PASS (AUTH
                                     required, PLAIN and LOGIN); --timeout S
                                     (idle sessions are closed after S seconds).
    python3 smtp_peer.py parse FILE  prints, as JSON, what Python's email parser
                                     reads in a message: headers (decoded), MIME
                                     structure, decoded parts.
"""
import asyncio
import logging
import warnings
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
                       "peer": session.peer[1],
                       "tls": server.transport.get_extra_info("sslcontext") is not None,
                       "auth": session.auth_data.login.decode() if session.authenticated else None}, f)
        os.replace(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: queued as Q%d" % self.n


def serve(d, args):
    warnings.simplefilter("ignore")  # aiosmtpd's advice on AUTH without STARTTLS
    logging.disable(logging.CRITICAL)  # handshakes our tests abort on purpose
    import ssl
    import subprocess
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
    opts = dict(zip(args[::2], args[1::2]))
    kw = {"hostname": "peer.test", "data_size_limit": 1 << 20}
    if "--timeout" in opts:
        kw["timeout"] = float(opts["--timeout"])
    ctx = None
    if "--tls" in opts:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if opts["--tls"] == "starttls":
            kw.update(tls_context=ctx, require_starttls=True)
        else:
            kw.update(auth_require_tls=False)
    if "--auth" in opts:
        user, pw = opts["--auth"].split(":", 1)

        def authenticator(server, session, envelope, mechanism, data):
            ok = (isinstance(data, LoginPassword) and data.login == user.encode()
                  and data.password == pw.encode())
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
        kw.update(authenticator=authenticator, auth_required=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    handler = Handler(d)
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, **kw), sock=sock,
        ssl=ctx if opts.get("--tls") == "tls" else None))
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
        serve(sys.argv[2], sys.argv[3:])
    else:
        parse(sys.argv[2])
