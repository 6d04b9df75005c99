//! The simulator as a test fixture: [`Sim::builder`] starts one in-process, on its own thread
//! and runtime, and the [`Sim`] it returns carries out the control operations of
//! docs/simulator.md as plain blocking calls, from a `#[test]` or from inside a tokio test
//! alike. Dropping it stops the modem and removes its link (and the directory the builder made
//! for it, if it chose the link).
//!
//! ```no_run
//! use serde_json::json;
//! use simgate::sim::{Profile, Sim};
//!
//! let sim = Sim::builder().profile(Profile::Simcom).start().unwrap();
//! // ... point the client under test at sim.link() ...
//! sim.deliver("+15550001111", "Your parcel is here").unwrap();
//! sim.wait(json!({"sent": 1}), std::time::Duration::from_secs(10)).unwrap();
//! assert_eq!(sim.sent()[0]["text"], "Your code is 123456");
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::control::{ControlAddr, ControlServer, Controller};
use super::{Faults, Profile, SimOptions, Simulator};

/// Options for a [`Sim`]; every setter has the meaning of the `simgate sim` flag of that name.
#[derive(Debug, Clone, Default)]
pub struct SimBuilder {
    opts: SimOptions,
    link: Option<PathBuf>,
    control: Option<ControlAddr>,
}

/// A running simulated modem with its control operations. See the module documentation.
pub struct Sim {
    link: PathBuf,
    device: PathBuf,
    control: Option<ControlAddr>,
    controller: Controller,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The directory the builder made for the link; removed on drop.
    own_dir: Option<PathBuf>,
}

impl Sim {
    /// A generic, well-behaved modem unless the builder says otherwise.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }
}

impl SimBuilder {
    /// Which vendor's modem to imitate.
    pub fn profile(mut self, p: Profile) -> Self {
        self.opts.profile = p;
        self
    }

    /// Where the link goes; by default a fresh directory under the system's temporary one.
    pub fn link(mut self, path: impl Into<PathBuf>) -> Self {
        self.link = Some(path.into());
        self
    }

    /// The IMEI `AT+CGSN` answers.
    pub fn imei(mut self, digits: &str) -> Self {
        self.opts.imei = Some(digits.into());
        self
    }

    /// The ICCID `AT+CCID` answers.
    pub fn iccid(mut self, digits: &str) -> Self {
        self.opts.iccid = Some(digits.into());
        self
    }

    /// Locks the SIM with this PIN.
    pub fn pin(mut self, pin: &str) -> Self {
        self.opts.pin = Some(pin.into());
        self
    }

    /// Seeds the simulator's RNG.
    pub fn seed(mut self, seed: u64) -> Self {
        self.opts.seed = seed;
        self
    }

    /// Also appends accepted texts to this JSON-lines log (they are always readable through
    /// [`Sim::sent`]).
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.log = Some(path.into());
        self
    }

    /// The start-up faults (`--send-delay`, `--no-network`, `--report-delay`, ...).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.opts.faults = faults;
        self
    }

    /// Changes the faults in place, e.g. `.with_faults(|f| f.report_delay = Duration::ZERO)`.
    pub fn with_faults(mut self, change: impl FnOnce(&mut Faults)) -> Self {
        change(&mut self.opts.faults);
        self
    }

    /// Also listens on a control socket, for clients outside this process.
    pub fn control(mut self, addr: ControlAddr) -> Self {
        self.control = Some(addr);
        self
    }

    /// Starts the modem on its own thread and returns once its link accepts commands.
    pub fn start(self) -> std::io::Result<Sim> {
        static N: AtomicU64 = AtomicU64::new(0);
        let (link, own_dir) = match self.link {
            Some(l) => (l, None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "simgate-sim-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir(&dir)?;
                (dir.join("modem"), Some(dir))
            }
        };
        let opts = SimOptions {
            link: link.clone(),
            ..self.opts
        };
        let control = self.control;
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("simgate-sim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let sim = match Simulator::start(opts).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let server = match &control {
                        Some(addr) => match ControlServer::bind(addr, sim.controller()).await {
                            Ok(s) => Some(s),
                            Err(e) => {
                                let _ = started_tx.send(Err(e));
                                sim.stop().await;
                                return;
                            }
                        },
                        None => None,
                    };
                    let bound = server.as_ref().map(|s| s.addr().clone());
                    let ready = (
                        sim.device().to_path_buf(),
                        sim.controller(),
                        tokio::runtime::Handle::current(),
                        bound,
                    );
                    if started_tx.send(Ok(ready)).is_err() {
                        sim.stop().await;
                        return;
                    }
                    let _ = stop_rx.await;
                    drop(server);
                    sim.stop().await;
                });
            })?;
        let started = started_rx
            .recv()
            .map_err(|_| std::io::Error::other("the simulator thread ended before it started"));
        let (device, controller, runtime, control) = match started.and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                let _ = thread.join();
                if let Some(d) = &own_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e);
            }
        };
        Ok(Sim {
            link,
            device,
            control,
            controller,
            runtime,
            stop: Some(stop_tx),
            thread: Some(thread),
            own_dir,
        })
    }
}

impl Sim {
    /// The link the modem started at (what a client opens).
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The pty behind the link at start.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The control socket, when the builder asked for one (with the port chosen for port 0).
    pub fn control_addr(&self) -> Option<&ControlAddr> {
        self.control.as_ref()
    }

    /// The in-process controller, for async code (`controller().call(&req).await`).
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// Sends one request (docs/simulator.md) and returns its answer; `{"ok": false}` is `Err`
    /// with the simulator's reason.
    pub fn call(&self, request: Value) -> Result<Value, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let ctl = self.controller.clone();
        // Run on the simulator's own runtime: this works from plain threads and from inside
        // another runtime alike, where blocking on a future would not.
        self.runtime.spawn(async move {
            let _ = tx.send(ctl.call(&request).await);
        });
        let answer = rx
            .recv()
            .map_err(|_| "the simulator has stopped".to_string())?;
        if answer["ok"] == Value::Bool(true) {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("no error given")
                .to_string())
        }
    }

    /// `deliver`: the network delivers a text (split into parts as a phone would).
    pub fn deliver(&self, from: &str, text: &str) -> Result<Value, String> {
        self.call(json!({"op": "deliver", "from": from, "text": text}))
    }

    /// `report`: answers the status report of the part with this TP-MR (`delivered`,
    /// `failed`, `delayed`, `never`, `hold`), now if held, else when it is sent.
    pub fn report_mr(&self, mr: u8, outcome: &str) -> Result<Value, String> {
        self.call(json!({"op": "report", "mr": mr, "outcome": outcome}))
    }

    /// `report`: answers the status reports of texts to this recipient.
    pub fn report_to(&self, to: &str, outcome: &str) -> Result<Value, String> {
        self.call(json!({"op": "report", "to": to, "outcome": outcome}))
    }

    /// `network`: the registration, by name (`home`, `searching`, ...).
    pub fn network(&self, registration: &str) -> Result<Value, String> {
        self.call(json!({"op": "network", "registration": registration}))
    }

    /// `sim`: `removed`, `inserted`, `pin`, `puk` or `ready`.
    pub fn sim_state(&self, state: &str) -> Result<Value, String> {
        self.call(json!({"op": "sim", "state": state}))
    }

    /// `unplug`: a USB pull; back after `replug_after` if given, else on [`Sim::replug`].
    pub fn unplug(&self, replug_after: Option<Duration>) -> Result<Value, String> {
        let ms = replug_after.map(|d| d.as_millis() as u64);
        self.call(json!({"op": "unplug", "replug_after_ms": ms}))
    }

    /// `replug`.
    pub fn replug(&self) -> Result<Value, String> {
        self.call(json!({"op": "replug"}))
    }

    /// `sent`: every accepted text as a log line (SPEC.md, "The simulator's log").
    pub fn sent(&self) -> Vec<Value> {
        self.call(json!({"op": "sent"}))
            .ok()
            .and_then(|a| a["lines"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `counters`.
    pub fn counters(&self) -> Value {
        self.call(json!({"op": "counters"})).unwrap_or(Value::Null)
    }

    /// `commands`: the last `n` command lines the modem received.
    pub fn commands(&self, n: usize) -> Vec<String> {
        self.call(json!({"op": "commands", "last": n}))
            .ok()
            .and_then(|a| {
                a["commands"].as_array().map(|c| {
                    c.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// `wait`: until every condition of `until` holds (e.g. `{"sent": 3}`), or `timeout`.
    pub fn wait(&self, until: Value, timeout: Duration) -> Result<Value, String> {
        self.call(json!({"op": "wait", "until": until, "timeout_ms": timeout.as_millis() as u64}))
    }

    /// Stops the modem and removes its link.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(d) = self.own_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_sim_answers_its_control_operations_and_cleans_up() {
        let sim = Sim::builder()
            .imei("490154203237518")
            .with_faults(|f| f.report_delay = Duration::ZERO)
            .start()
            .unwrap();
        let link = sim.link().to_path_buf();
        assert!(std::fs::symlink_metadata(&link).is_ok());
        let ping = sim.call(json!({"op": "ping"})).unwrap();
        assert_eq!(ping["imei"], "490154203237518");
        assert_eq!(ping["device"], json!(sim.device()));
        let a = sim.deliver("+15550001111", "hello").unwrap();
        assert_eq!(a["parts"][0]["routed"], "stored");
        assert_eq!(sim.counters()["stored"], 1);
        assert!(
            sim.network("upside-down")
                .unwrap_err()
                .contains("registration")
        );
        assert!(
            sim.wait(json!({"sent": 1}), Duration::from_millis(50))
                .unwrap_err()
                .contains("timeout")
        );
        let dir = link.parent().unwrap().to_path_buf();
        drop(sim);
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(!dir.exists());
    }
}
