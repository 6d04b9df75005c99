# Twilio StatusCallbacks from simgate, checked with the official `twilio` Python SDK: messages
# created with `status_callback` get form-encoded callbacks that the SDK's own RequestValidator
# accepts, in order (queued, sent, delivered), and `From` is kept per message.
# argv: base URL, auth token. Prints "ok <scenario>" lines; any failure raises.
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

base, token = sys.argv[1], sys.argv[2]
AC = "AC0123456789abcdef0123456789abcdef"
client = Client(AC, token)
client.api.base_url = base
validator = RequestValidator(token)
received = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        params = dict(parse_qsl(body, keep_blank_values=True))
        ok = validator.validate(url, params, self.headers.get("X-Twilio-Signature", ""))
        received.append((ok, params, self.headers.get("Content-Type")))
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
callback = f"http://127.0.0.1:{server.server_address[1]}/twilio/status?app=1&x=a%20b"

m = client.messages.create(
    to="+15550002222", from_="+15559990001", body="callback me", status_callback=callback
)
deadline = time.time() + 30
while time.time() < deadline:
    if any(p.get("MessageStatus") == "delivered" for _, p, _ in received):
        break
    time.sleep(0.05)
statuses = [p["MessageStatus"] for _, p, _ in received]
assert statuses == ["queued", "sent", "delivered"], statuses
for ok, p, ctype in received:
    assert ok, f"RequestValidator refused {p}"
    assert ctype.startswith("application/x-www-form-urlencoded"), ctype
    assert p["MessageSid"] == m.sid and p["SmsSid"] == m.sid, p
    assert p["AccountSid"] == AC and p["From"] == "+15559990001" and p["To"] == "+15550002222", p
    assert p["ApiVersion"] == "2010-04-01" and "ErrorCode" not in p, p
print("ok callbacks")

# With two configured senders, only the stored From can say which one a message used.
assert client.messages(m.sid).fetch().from_ == "+15559990001"
listed = [x for x in client.messages.list(to="+15550002222")]
assert listed and listed[0].from_ == "+15559990001", [x.from_ for x in listed]
print("ok from")

# A message without a callback gets none; a callback simgate may not call is refused.
before = len(received)
client.messages.create(to="+15550003333", from_="+15559990000", body="no callback")
for bad in ["http://example.com/cb", "ftp://127.0.0.1/cb", "https://user:pw@example.com/cb"]:
    try:
        client.messages.create(to="+15550004444", from_="+15559990000", body="x", status_callback=bad)
        raise AssertionError(f"{bad} was accepted")
    except TwilioRestException as e:
        assert e.code == 21609 and e.status == 400, (bad, e.code, e.status, e.msg)
time.sleep(2)
assert len(received) == before, received[before:]
print("ok refused")
