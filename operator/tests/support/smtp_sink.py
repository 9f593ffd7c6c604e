"""An aiosmtpd handler that saves every message it receives, for the email notifier tests.

Run:  PYTHONPATH=operator/tests/support python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_sink.SaveToDir DIR

Each message becomes DIR/NNNN.eml (raw) and DIR/NNNN.json (envelope and parsed parts); the
JSON is written last, atomically, so a reader never sees half a message.
"""

import email
import email.policy
import json
import os


class SaveToDir:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("usage: -c smtp_sink.SaveToDir DIRECTORY")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%04d" % self.count)
        raw = envelope.original_content or envelope.content
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts, plain, html = [], None, None
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            parts.append(ctype)
            if ctype == "text/plain" and plain is None:
                plain = part.get_content()
            elif ctype == "text/html" and html is None:
                html = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "content_type": msg.get_content_type(),
            "parts": parts,
            "plain": plain,
            "html": html,
        }
        tmp = base + ".json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(tmp, base + ".json")
        return "250 Message accepted for delivery"
