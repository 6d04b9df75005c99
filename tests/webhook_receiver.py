"""A webhook receiver that checks every delivery with the official Standard Webhooks library.

Usage: webhook_receiver.py PORT_FILE LOG_FILE SECRET

Listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE once listening). Each POST is
verified with standardwebhooks.Webhook(SECRET).verify(body, headers), which checks the
signature, and that the timestamp is within five minutes; one JSON line per request goes to
LOG_FILE: {"verified": bool, "error": str|null, "webhook_id": ..., "event": <the body>}.
Verified deliveries are answered 204, others 400.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port_file, log_file, secret = sys.argv[1], sys.argv[2], sys.argv[3]
hook = Webhook(secret)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"webhook_id": headers.get("webhook-id"), "verified": False, "error": None}
        try:
            record["event"] = hook.verify(body, headers)
            record["verified"] = True
        except WebhookVerificationError as e:
            record["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - any failure is a refused delivery
            record["error"] = f"{type(e).__name__}: {e}"
        with open(log_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(204 if record["verified"] else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
