# Drives simgate's Twilio-compatible routes with the official `twilio` Python SDK.
# argv: base URL, simulator log path. Prints "ok <scenario>" lines; any failure raises.
import json, re, sys, time
from twilio.rest import Client
from twilio.base.exceptions import TwilioRestException

base, sim_log = sys.argv[1], sys.argv[2]
AC = "AC0123456789abcdef0123456789abcdef"
VA = "VA0123456789abcdef0123456789abcdef"
client = Client(AC, "0123456789abcdef0123456789abcdef")
client.api.base_url = base
client.verify.base_url = base

def sim_lines():
    try:
        with open(sim_log) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []

def wait_text(to, n):
    deadline = time.time() + 30
    while time.time() < deadline:
        got = [l for l in sim_lines() if l["to"] == to]
        if len(got) >= n:
            return got[n - 1]["text"]
        time.sleep(0.05)
    raise AssertionError(f"no text {n} for {to}")

def expect(code, fn):
    try:
        fn()
    except TwilioRestException as e:
        assert e.code == code, (e.code, e.msg)
        return e
    raise AssertionError(f"expected TwilioRestException {code}")

m = client.messages.create(to="+15550001111", from_="+15559990000", body="hello from the sdk")
assert m.sid.startswith("SM") and len(m.sid) == 34, m.sid
assert m.status in ("queued", "sending", "sent", "delivered") and m.num_segments == "1" and m.direction == "outbound-api"
assert wait_text("+15550001111", 1) == "hello from the sdk"
print("ok create")

f = client.messages(m.sid).fetch()
assert f.sid == m.sid and f.body == "hello from the sdk" and f.to == "+15550001111"
assert f.date_created is not None
print("ok fetch", f.status)

for i in range(3):
    client.messages.create(to="+15550001112", from_="+15559990000", body=f"page {i}")
listed = client.messages.list(page_size=2, limit=4)
assert len(listed) == 4, len(listed)
assert len({x.sid for x in listed}) == 4
print("ok list")

expect(21211, lambda: client.messages.create(to="12", from_="+15559990000", body="x"))
expect(21602, lambda: client.messages.create(to="+15550001111", from_="+15559990000", body=""))
expect(20404, lambda: client.messages("SM" + "0" * 32).fetch())
bad = Client(AC, "wrong-token-wrong-token")
bad.api.base_url = base
expect(20003, lambda: bad.messages.create(to="+15550001111", from_="+1555", body="x"))
print("ok errors")

svc = client.verify.v2.services(VA)
v = svc.verifications.create(to="+15550002222", channel="sms")
assert v.sid.startswith("VE") and v.status == "pending", (v.sid, v.status)
code = re.search(r"\d{6}", wait_text("+15550002222", 1)).group(0)
wrong = "000000" if code != "000000" else "111111"
c = svc.verification_checks.create(to="+15550002222", code=wrong)
assert c.status == "pending" and c.valid is False
c = svc.verification_checks.create(verification_sid=v.sid, code=code)
assert c.status == "approved" and c.valid is True
expect(20404, lambda: svc.verification_checks.create(verification_sid=v.sid, code=code))
expect(20404, lambda: svc.verifications(v.sid).fetch())
print("ok verify")

v2 = svc.verifications.create(to="+15550003333", channel="sms")
wait_text("+15550003333", 1)
last = None
for i in range(5):
    last = svc.verification_checks.create(to="+15550003333", code="000001")
assert last.status == "max_attempts_reached", last.status
expect(20404, lambda: svc.verification_checks.create(verification_sid=v2.sid, code="000001"))
print("ok exhaust")

v3 = svc.verifications.create(to="+15550004444", channel="sms")
u = svc.verifications(v3.sid).update(status="canceled")
assert u.status == "canceled"
expect(60200, lambda: svc.verifications.create(to="+15550004444", channel="call"))
print("ok cancel")
