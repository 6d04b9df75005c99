"""Signs a Supabase Send SMS Hook body with the official Standard Webhooks library (PyPI
`standardwebhooks`), exactly as Supabase Auth signs it (internal/hooks/hookshttp: the "v1,"
prefix of Supabase's secret stripped, then the library's Webhook.sign).

Usage: identity_hooks.py SECRET MSG_ID UNIX_SECONDS < BODY
Prints the webhook-signature header value. With the extra argument `verify`, also checks the
signature with the library's own verifier first (only meaningful for a current timestamp).
"""

import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


def main() -> None:
    secret, msg_id, ts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    body = sys.stdin.buffer.read()
    wh = Webhook(secret.removeprefix("v1,"))
    sig = wh.sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
    if len(sys.argv) > 4 and sys.argv[4] == "verify":
        wh.verify(
            body,
            {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig},
        )
    print(sig)


if __name__ == "__main__":
    main()
