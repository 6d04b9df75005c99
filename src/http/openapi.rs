//! The OpenAPI 3.1 description of the API, served at `GET /v1/openapi.json`.
//!
//! Written by hand as a JSON value (no code generator dependency); a test checks that its paths
//! and methods are exactly those of [`super::ROUTES`].

use serde_json::{Value, json};

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn id_param(what: &str, prefix: &str) -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": format!("{what} id"),
        "schema": {"type": "string", "pattern": format!("^{prefix}[0-9a-f]{{32}}$")}
    })
}

fn idempotency_param() -> Value {
    json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Repeat the same key with the same body to get the first answer again \
                        without a second SMS; the same key with another body answers 422.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
    })
}

/// Errors every authenticated route can answer.
fn common_errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "401".into(),
        problem_response("Missing or wrong bearer token"),
    );
    m.insert("405".into(), problem_response("Method not allowed"));
    m.insert(
        "429".into(),
        problem_response("A rate limit refused the request; see Retry-After"),
    );
    for (code, d) in extra {
        m.insert((*code).into(), problem_response(d));
    }
    for code in ["429", "503"] {
        if let Some(Value::Object(r)) = m.get_mut(code) {
            r.insert(
                "headers".into(),
                json!({"Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer", "minimum": 1}
                }}),
            );
        }
    }
    m
}

fn responses(ok: (&str, Value), extra: &[(&str, &str)]) -> Value {
    let mut m = common_errors(extra);
    m.insert(ok.0.into(), ok.1);
    Value::Object(m)
}

/// The document.
pub fn document() -> Value {
    let otp_errors: &[(&str, &str)] = &[
        ("400", "Malformed id or JSON"),
        ("404", "No such OTP"),
        ("413", "Body too large"),
        ("415", "Body is not JSON"),
        ("422", "A field is invalid"),
    ];
    let verify_errors: &[(&str, &str)] = &[
        ("400", "Malformed id or JSON"),
        ("404", "No such OTP (or, by number: no pending OTP for it)"),
        (
            "409",
            "The OTP had already ended: approved (otp-already-approved), canceled \
             (otp-canceled) or out of attempts (otp-attempts-exhausted); nothing was counted, \
             and otp_status names the state GET /v1/otp/{id} shows",
        ),
        (
            "410",
            "The OTP has expired (otp-expired); none of its codes verifies any more",
        ),
        ("413", "Body too large"),
        ("415", "Body is not JSON"),
        ("422", "A field is invalid"),
    ];
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "simgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One-time passwords and texts sent straight from a SIM card. Every /v1 \
                            route needs `Authorization: Bearer <token>`. Every error is \
                            application/problem+json (RFC 9457)."
        },
        "servers": [{"url": "http://127.0.0.1:8787"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/otp": {
                "post": {
                    "operationId": "createOtp",
                    "summary": "Send a fresh code to a number",
                    "description": "With on_pending = reuse (the default, otp.on_pending) a number \
                        that has a pending OTP gets that OTP back (same id and expires_at) with one \
                        more text carrying a fresh code, exactly as a resend sends it; earlier codes \
                        stay valid, and a warning says so. With supersede the pending OTP is \
                        canceled and a new one starts. Each SMS part of the text counts as one send \
                        in limits.otp_per_number, otp_per_prefix and sends_global; a text over \
                        otp.max_parts answers 422 naming the field that made it long.",
                    "parameters": [idempotency_param()],
                    "requestBody": json_body("CreateOtp"),
                    "responses": responses(("202", json_response("Queued", "OtpCreated")), &[
                        ("400", "Malformed JSON"), ("403", "Number refused by the prefix lists"),
                        ("413", "Body too large"), ("415", "Body is not JSON"),
                        ("422", "A field is invalid (also: the text would exceed otp.max_parts, \
                                 naming the field that made it long), or the Idempotency-Key was \
                                 reused"),
                        ("503", "The queue is full; see Retry-After"),
                    ])
                }
            },
            "/v1/otp/verify": {
                "post": {
                    "operationId": "verifyOtpByNumber",
                    "summary": "Check a code against the newest pending OTP of a number",
                    "requestBody": json_body("VerifyByNumber"),
                    "responses": responses(("200", json_response("Checked", "Verify")), verify_errors)
                }
            },
            "/v1/otp/{id}": {
                "get": {
                    "operationId": "getOtp",
                    "summary": "An OTP and its newest text",
                    "parameters": [id_param("OTP", "otp_")],
                    "responses": responses(("200", json_response("The OTP", "Otp")), otp_errors)
                },
                "delete": {
                    "operationId": "cancelOtp",
                    "summary": "Cancel a pending OTP; its queued texts are not sent",
                    "parameters": [id_param("OTP", "otp_")],
                    "responses": responses(("200", json_response("Canceled", "Canceled")), &[
                        ("400", "Malformed id"), ("404", "No such OTP"),
                        ("409", "The OTP already ended otherwise"),
                    ])
                }
            },
            "/v1/otp/{id}/verify": {
                "post": {
                    "operationId": "verifyOtp",
                    "summary": "Check a code; an OTP that has already ended answers 409, or 410 once expired",
                    "parameters": [id_param("OTP", "otp_")],
                    "requestBody": json_body("VerifyById"),
                    "responses": responses(("200", json_response("Checked", "Verify")), verify_errors)
                }
            },
            "/v1/otp/{id}/resend": {
                "post": {
                    "operationId": "resendOtp",
                    "summary": "Send another text with a fresh code; earlier codes stay valid",
                    "description": "The text is the first one with only the code changed (same \
                        template, code length, origin line and stated lifetime). At most \
                        otp.max_resends resends per OTP: past that, 429 with limit max_resends and \
                        Retry-After until the OTP expires.",
                    "parameters": [id_param("OTP", "otp_")],
                    "responses": responses(("202", json_response("Queued", "OtpCreated")), &[
                        ("400", "Malformed id"), ("404", "No such OTP"),
                        ("409", "The OTP is no longer pending"),
                        ("503", "The queue is full; see Retry-After"),
                    ])
                }
            },
            "/v1/messages": {
                "post": {
                    "operationId": "sendText",
                    "summary": "Queue a plain text",
                    "parameters": [idempotency_param()],
                    "requestBody": json_body("SendText"),
                    "responses": responses(("202", json_response("Queued", "TextQueued")), &[
                        ("400", "Malformed JSON"), ("403", "Number refused by the prefix lists"),
                        ("413", "Body too large"), ("415", "Body is not JSON"),
                        ("422", "A field is invalid, or the Idempotency-Key was reused"),
                        ("503", "The queue is full; see Retry-After"),
                    ])
                },
                "get": {
                    "operationId": "listMessages",
                    "summary": "The delivery log, newest first",
                    "parameters": [
                        {"name": "to", "in": "query", "schema": {"type": "string"},
                         "description": "Only this E.164 number (encode + as %2B)"},
                        {"name": "status", "in": "query", "schema": {"$ref": "#/components/schemas/MessageStatus"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                        {"name": "before", "in": "query", "schema": {"type": "string"},
                         "description": "A message id (as given in next_before) or an RFC 3339 time"}
                    ],
                    "responses": responses(("200", json_response("Messages", "Messages")), &[
                        ("400", "Malformed query string"), ("422", "A parameter is invalid"),
                    ])
                }
            },
            "/v1/messages/{id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "One message of the delivery log",
                    "parameters": [id_param("Message", "msg_")],
                    "responses": responses(("200", json_response("The message", "Message")), &[
                        ("400", "Malformed id"), ("404", "No such message"),
                    ])
                }
            },
            "/v1/modems": {
                "get": {
                    "operationId": "listModems",
                    "summary": "The modems and their state",
                    "responses": responses(("200", json_response("Modems", "Modems")), &[])
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": responses(("200", json!({"description": "OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}}})), &[])
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 while the process serves",
                    "security": [],
                    "responses": {"200": {"description": "Serving", "content": {"application/json":
                        {"schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "200 when at least one modem is ready (in a cluster: of any live node; `modems_ready` names `<node>/<modem>`, `nodes_ready` the nodes; 503 on a node that cannot reach the database)",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "503": problem_response("No modem is ready")
                    }
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus / OpenMetrics text",
                    "security": [],
                    "responses": {"200": {"description": "Metrics",
                        "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
                }
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        }
    });
    add_inbound(&mut doc);
    add_events(&mut doc);
    doc
}

/// `GET /v1/events` and the event schema (the body of every webhook delivery too).
fn add_events(doc: &mut Value) {
    let types: Vec<&str> = crate::model::EVENT_TYPES.to_vec();
    doc["paths"]["/v1/events"] = json!({
        "get": {
            "operationId": "listEvents",
            "summary": "The event outbox, oldest first: catch up (replay) without webhooks",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0},
                 "description": "Only events with a greater seq: the previous page's next_after"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                {"name": "types", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated event types; absent means all"},
                {"name": "wait_seconds", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 30, "default": 0},
                 "description": "When no event is there yet, wait this long for one (long poll)"}
            ],
            "responses": responses(("200", json_response("Events", "EventList")), &[
                ("400", "Malformed query string"), ("422", "A parameter is invalid"),
            ])
        }
    });
    doc["components"]["schemas"]["Event"] = json!({
        "type": "object",
        "required": ["id", "seq", "type", "timestamp", "subject", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$",
                   "description": "Stable across retries; the webhook-id header of its deliveries"},
            "seq": {"type": "integer", "description": "Increases in commit order; never reused"},
            "type": {"type": "string", "enum": types},
            "timestamp": {"type": "string", "format": "date-time", "description": "When the change happened"},
            "subject": {"type": "string", "description": "The message, OTP, inbound text or modem id"},
            "data": {"type": "object", "description": "The changed object; never an OTP code or an unmasked OTP text"}
        }
    });
    doc["components"]["schemas"]["EventList"] = json!({
        "type": "object", "required": ["events", "next_after", "latest_seq"],
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next_after": {"type": "integer", "description": "Pass as after= for the next page"},
            "latest_seq": {"type": "integer", "description": "The highest seq assigned so far"}
        }
    });
}

/// The inbound routes and their schemas, added to `doc` (one `json!` of everything would exceed
/// the macro's recursion limit).
fn add_inbound(doc: &mut Value) {
    doc["paths"]["/v1/inbound"] = json!({
        "get": {
            "operationId": "listInbound",
            "summary": "Texts the modems received, newest first ([inbound] enabled = true)",
            "parameters": [
                {"name": "from", "in": "query", "schema": {"type": "string"},
                 "description": "Only this sender: an E.164 number (encode + as %2B) or the sender name"},
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"},
                 "description": "Only texts stored at or after this RFC 3339 time"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                {"name": "before", "in": "query", "schema": {"type": "string"},
                 "description": "An inbound id, as given in next_before: the next page"}
            ],
            "responses": responses(("200", json_response("Inbound texts", "InboundList")), &[
                ("400", "Malformed query string"), ("422", "A parameter is invalid"),
            ])
        }
    });
    doc["paths"]["/v1/inbound/{id}"] = json!({
        "get": {
            "operationId": "getInbound",
            "summary": "One received text",
            "parameters": [id_param("Inbound text", "in_")],
            "responses": responses(("200", json_response("The text", "Inbound")), &[
                ("400", "Malformed id"), ("404", "No such inbound text"),
            ])
        }
    });
    doc["components"]["schemas"]["Inbound"] = json!({
        "type": "object",
        "required": ["id", "from", "text", "modem", "sc_timestamp", "received_at", "parts", "complete", "missing_parts"],
        "properties": {
            "id": {"type": "string", "pattern": "^in_[0-9a-f]{32}$"},
            "from": {"type": "string", "description": "E.164 number, national digits or an alphanumeric sender name"},
            "text": {"type": "string", "description": "The whole text; for an incomplete one, the parts that came, in order"},
            "modem": {"type": "string"},
            "sc_timestamp": {"type": "string", "format": "date-time",
                             "description": "When the SMS centre received it (TP-SCTS), with its own UTC offset"},
            "received_at": {"type": "string", "format": "date-time", "description": "When simgate stored it"},
            "parts": {"type": "integer", "minimum": 1},
            "complete": {"type": "boolean",
                         "description": "false: parts were missing when [inbound] reassembly_timeout_seconds ran out"},
            "missing_parts": {"type": "array", "items": {"type": "integer"}}
        }
    });
    doc["components"]["schemas"]["InboundList"] = json!({
        "type": "object", "required": ["inbound"],
        "properties": {
            "inbound": {"type": "array", "items": {"$ref": "#/components/schemas/Inbound"}},
            "next_before": {"type": "string", "description": "Pass as before= for the next page"}
        }
    });
}

fn schemas() -> Value {
    let e164 =
        json!({"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$", "examples": ["+15551234567"]});
    let time = json!({"type": "string", "format": "date-time"});
    let opt_time = json!({"type": ["string", "null"], "format": "date-time"});
    let warnings = json!({"type": "array", "items": {"type": "string"},
        "description": "Absent when all is well. Things the client should know that did not stop \
                        the send: no modem is ready (the message waits in the queue), the text \
                        takes several SMS parts or UCS-2, a pending OTP was reused"});
    json!({
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "field": {"type": "string", "description": "The offending field, when one is"},
                "limit": {"type": "string", "description": "The limit that refused (429): a limits.* key, or max_resends"},
                "id": {"type": "string", "description": "The OTP, for a verify of an ended OTP (409, 410)"},
                "otp_status": {"$ref": "#/components/schemas/OtpStatus", "description": "The ended OTP's final status (409, 410)"},
                "verified": {"const": false, "description": "Always false on a 409 or 410 verify"},
                "attempts_remaining": {"type": "integer", "description": "Wrong attempts left when the OTP ended (409, 410)"}
            }
        },
        "OtpStatus": {"enum": ["pending", "approved", "expired", "max_attempts_reached", "canceled"]},
        "MessageStatus": {"enum": ["queued", "sending", "sent", "delivered", "failed", "expired", "canceled"]},
        "CreateOtp": {
            "type": "object",
            "additionalProperties": false,
            "required": ["to"],
            "properties": {
                "to": e164,
                "ttl_seconds": {"type": "integer", "description": "Default otp.ttl_seconds; bounded by otp.min_ttl_seconds..otp.max_ttl_seconds"},
                "code_length": {"type": "integer", "minimum": 4, "maximum": 10},
                "template": {"type": "string", "maxLength": 459, "description": "Must contain {code}; may contain {lifetime} (\"30 seconds\", \"1 minute\", \"24 hours\") and {minutes} (whole minutes, rounded up; \"{minutes} minutes\" reads as {lifetime})"},
                "origin": {"type": "string", "description": "Host name; adds the WebOTP line @<origin> #<code>"},
                "app_hash": {"type": "string", "minLength": 11, "maxLength": 11, "description": "Android SMS Retriever hash, added as the last line"},
                "on_pending": {"enum": ["reuse", "supersede"], "description": "When the number has a pending OTP: reuse it (one more text, same id) or cancel it and start anew; default otp.on_pending (reuse)"}
            }
        },
        "OtpCreated": {
            "type": "object",
            "required": ["id", "to", "status", "message_id", "expires_at", "parts"],
            "properties": {
                "id": {"type": "string"}, "to": e164, "status": {"$ref": "#/components/schemas/OtpStatus"},
                "message_id": {"type": "string"}, "expires_at": time, "parts": {"type": "integer"},
                "warnings": warnings
            }
        },
        "VerifyById": {
            "type": "object", "additionalProperties": false, "required": ["code"],
            "properties": {"code": {"type": "string", "pattern": "^[0-9]{4,10}$"}}
        },
        "VerifyByNumber": {
            "type": "object", "additionalProperties": false, "required": ["to", "code"],
            "properties": {"to": e164, "code": {"type": "string", "pattern": "^[0-9]{4,10}$"}}
        },
        "Verify": {
            "type": "object",
            "required": ["id", "status", "verified", "attempts_remaining"],
            "properties": {
                "id": {"type": "string"}, "status": {"$ref": "#/components/schemas/OtpStatus"},
                "verified": {"type": "boolean"}, "attempts_remaining": {"type": "integer"}
            }
        },
        "Otp": {
            "type": "object",
            "required": ["id", "to", "status", "attempts_remaining", "expires_at", "message"],
            "properties": {
                "id": {"type": "string"}, "to": e164, "status": {"$ref": "#/components/schemas/OtpStatus"},
                "attempts_remaining": {"type": "integer"}, "expires_at": time, "created_at": time,
                "texts": {"type": "integer"},
                "message": {"oneOf": [{"$ref": "#/components/schemas/Message"}, {"type": "null"}]}
            }
        },
        "Canceled": {
            "type": "object", "required": ["id", "status"],
            "properties": {"id": {"type": "string"}, "status": {"const": "canceled"}}
        },
        "SendText": {
            "type": "object", "additionalProperties": false, "required": ["to", "text"],
            "properties": {"to": e164, "text": {"type": "string", "minLength": 1, "description": "At most 10 SMS parts"}}
        },
        "TextQueued": {
            "type": "object", "required": ["id", "status", "parts"],
            "properties": {"id": {"type": "string"}, "status": {"const": "queued"}, "parts": {"type": "integer"}, "warnings": warnings}
        },
        "Message": {
            "type": "object",
            "required": ["id", "to", "status", "parts", "attempts", "created_at", "sent_at", "delivered_at", "error"],
            "properties": {
                "id": {"type": "string"}, "to": e164, "kind": {"enum": ["otp", "text"]},
                "otp_id": {"type": ["string", "null"]},
                "status": {"$ref": "#/components/schemas/MessageStatus"},
                "text": {"type": "string", "description": "The text; OTP codes are masked"},
                "parts": {"type": "integer"}, "attempts": {"type": "integer"},
                "created_at": time, "sent_at": opt_time, "delivered_at": opt_time,
                "error": {"type": ["string", "null"]}, "modem": {"type": ["string", "null"]}
            }
        },
        "Messages": {
            "type": "object", "required": ["messages"],
            "properties": {
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                "next_before": {"type": "string", "description": "Pass as before= for the next page"}
            }
        },
        "Modems": modems_schema()
    })
}

/// `GET /v1/modems`, apart from the other schemas: one `json!` of them all would exceed the
/// macro's recursion limit.
fn modems_schema() -> Value {
    json!({
        "type": "object", "required": ["modems"],
        "properties": {"modems": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "device", "state", "manufacturer", "model", "imei", "iccid", "imsi", "smsc", "operator", "registration", "signal", "sent", "failed", "last_error"],
            "properties": {
                "node": {"type": "string", "description": "The cluster node the modem is plugged into; absent with one node (SQLite)"},
                "id": {"type": "string"}, "device": {"type": "string"}, "state": {"type": "string"},
                "manufacturer": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]},
                "imei": {"type": ["string", "null"]},
                "iccid": {"type": ["string", "null"], "description": "The SIM card's ICCID"},
                "imsi": {"type": ["string", "null"], "description": "+CIMI: the subscription; null while the SIM is locked"},
                "smsc": {"type": ["string", "null"], "description": "+CSCA: the service centre; empty when the SIM has none (sends then fail)"},
                "operator": {"type": ["string", "null"]},
                "registration": {"type": ["string", "null"]}, "signal": {"type": ["integer", "null"]},
                "sent": {"type": "integer"}, "failed": {"type": "integer"},
                "last_error": {"type": ["string", "null"], "description": "Why the modem is not ready: the most recent failure to open or initialise it, in words; null once initialised"}
            }
        }}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The document describes exactly the routes the router serves, no more, no fewer.
    #[test]
    fn paths_and_methods_match_the_route_table() {
        let doc = document();
        let mut in_doc = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                in_doc.insert((method.to_uppercase(), path.clone()));
            }
        }
        let in_router: BTreeSet<(String, String)> = super::super::ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(in_doc, in_router);
    }

    /// Every `$ref` points at a schema that exists.
    #[test]
    fn references_resolve() {
        let doc = document();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        if k == "$ref" {
                            out.push(v.as_str().unwrap().to_owned());
                        } else {
                            walk(v, out);
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r}");
        }
    }
}
