//! [`Hub`]: several simulators behind one control socket; a request's `modem` field picks
//! one. Separate from the controller because routing knows nothing of the operations.

use serde_json::{Value, json};

use super::controller::Controller;
use super::observed::modem_json;
/// The simulators behind one control socket (`simgate sim --link A --link B`): a request's
/// `modem` field, the index from 0 or the link path, picks one; without it, the first.
#[derive(Debug, Clone)]
pub struct Hub {
    modems: Vec<Controller>,
}

impl From<Controller> for Hub {
    fn from(c: Controller) -> Hub {
        Hub { modems: vec![c] }
    }
}

impl Hub {
    /// One control socket for these modems, in the order `modem` indexes them.
    pub fn new(modems: Vec<Controller>) -> Hub {
        assert!(!modems.is_empty(), "a hub needs at least one modem");
        Hub { modems }
    }

    /// Answers one request: `modems` lists them all, anything else goes to the modem named.
    pub async fn call(&self, request: &Value) -> Value {
        if request.get("op").and_then(Value::as_str) == Some("modems") {
            let list: Vec<Value> = self
                .modems
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = modem_json(&c.shared.lock());
                    v["modem"] = json!(i);
                    v
                })
                .collect();
            return json!({"ok": true, "modems": list});
        }
        match self.pick(request) {
            Ok(c) => c.call(request).await,
            Err(e) => json!({"ok": false, "error": e}),
        }
    }

    /// Parses a request line and answers it.
    pub async fn call_line(&self, line: &str) -> Value {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => self.call(&v).await,
            Err(e) => json!({"ok": false, "error": format!("the request is not JSON: {e}")}),
        }
    }

    fn pick(&self, request: &Value) -> Result<&Controller, String> {
        let links = || {
            self.modems
                .iter()
                .map(|c| c.shared.lock().link.display().to_string())
                .collect::<Vec<_>>()
        };
        match request.get("modem") {
            None | Some(Value::Null) => Ok(&self.modems[0]),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|i| self.modems.get(i as usize))
                .ok_or_else(|| {
                    format!(
                        "\"modem\" {n}: there are {} (0 to {})",
                        self.modems.len(),
                        self.modems.len() - 1
                    )
                }),
            Some(Value::String(s)) => {
                let links = links();
                links
                    .iter()
                    .position(|l| l == s)
                    .map(|i| &self.modems[i])
                    .ok_or_else(|| format!("\"modem\" {s:?} is none of the links {links:?}"))
            }
            Some(_) => Err("\"modem\" is an index from 0 or a link path".into()),
        }
    }
}
