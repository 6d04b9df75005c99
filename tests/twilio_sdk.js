// Drives simgate's Twilio-compatible routes with the official `twilio` npm SDK.
// argv: base URL, simulator log path. Prints "ok <scenario>" lines; any failure exits non-zero.
const fs = require("fs");
const assert = require("assert");
const twilio = require("twilio");
const [base, simLog] = process.argv.slice(2);
const AC = "AC0123456789abcdef0123456789abcdef";
const VA = "VA0123456789abcdef0123456789abcdef";
const client = twilio(AC, "0123456789abcdef0123456789abcdef");
client.api.baseUrl = base;
client.verify.baseUrl = base;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitText(to, n) {
  for (let i = 0; i < 600; i++) {
    let lines = [];
    try {
      lines = fs.readFileSync(simLog, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    } catch (e) {}
    const got = lines.filter((l) => l.to === to);
    if (got.length >= n) return got[n - 1].text;
    await sleep(50);
  }
  throw new Error(`no text ${n} for ${to}`);
}
async function expectCode(code, fn) {
  try {
    await fn();
  } catch (e) {
    assert.strictEqual(e.code, code, `${e.code} ${e.message}`);
    assert.strictEqual(e.constructor.name, "RestException");
    return;
  }
  throw new Error(`expected RestException ${code}`);
}

(async () => {
  const m = await client.messages.create({ to: "+15550005555", from: "+15559990000", body: "hello from node" });
  assert.ok(m.sid.startsWith("SM") && ["queued", "sending", "sent", "delivered"].includes(m.status), m.sid);
  assert.strictEqual(await waitText("+15550005555", 1), "hello from node");
  console.log("ok create");
  const f = await client.messages(m.sid).fetch();
  assert.strictEqual(f.body, "hello from node");
  await client.messages.create({ to: "+15550005556", from: "+15559990000", body: "second" });
  const listed = await client.messages.list({ pageSize: 1, limit: 2 });
  assert.strictEqual(new Set(listed.map((x) => x.sid)).size, 2);
  console.log("ok fetch list");
  await expectCode(21211, () => client.messages.create({ to: "12", from: "+15559990000", body: "x" }));
  await expectCode(21606, () => client.messages.create({ to: "+15550005555", from: "+1999", body: "x" }));
  console.log("ok errors");
  const svc = client.verify.v2.services(VA);
  const v = await svc.verifications.create({ to: "+15550006666", channel: "sms" });
  const code = (await waitText("+15550006666", 1)).match(/\d{6}/)[0];
  const wrong = code === "000000" ? "111111" : "000000";
  let c = await svc.verificationChecks.create({ to: "+15550006666", code: wrong });
  assert.strictEqual(c.status, "pending");
  c = await svc.verificationChecks.create({ verificationSid: v.sid, code });
  assert.strictEqual(c.status, "approved");
  await expectCode(20404, () => svc.verificationChecks.create({ verificationSid: v.sid, code }));
  console.log("ok verify");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
