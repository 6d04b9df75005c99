//! The daemon: builds every part from a validated [`Config`] and runs them until shutdown.
//!
//! Start-up order matters for durability and for "ready within a second": the data directory,
//! the keys and the store come first (a request must never be accepted before it can be
//! committed), then the modems and the dispatcher (which first recovers sends interrupted by a
//! previous crash), and the HTTP listener last. Shutdown runs the other way: stop accepting
//! requests, let sends in flight finish so their outcome is recorded, then close the ports.

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::clock::Clock;
use crate::config::{Config, ModemSettings, StoreBackend};
use crate::datadir::{self, DataDirError, Lock};
use crate::dispatch::{self, Dispatcher};
use crate::http::{self, AppState, BodyLimit, ModemJson, ModemSource, Tokens};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::modem::{ModemHandle, ModemStatus};
use crate::notify::{self, Notifier};
use crate::otp::Keys;
use crate::service::{self, Deps, Service};
use crate::sim::{SimOptions, Simulator};
use crate::store::{PgOptions, Store, StoreOptions};

/// File names inside the data directory.
pub const DATABASE_FILE: &str = "simgate.db";
/// The API token created at first start when the config names none.
pub const TOKEN_FILE: &str = "api-token";
/// The built-in simulator's serial link (`serve --simulate`).
pub const SIM_LINK: &str = "sim-modem";
/// The built-in simulator's log of accepted texts (SPEC.md "The simulator's log").
pub const SIM_LOG: &str = "sim-sent.jsonl";

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A `[[webhook]]`'s secrets could not be loaded.
    #[error("webhook {endpoint}: {reason}")]
    Webhook {
        /// The endpoint's URL without credentials.
        endpoint: String,
        /// Why (never the secret).
        reason: String,
    },
    /// `[twilio]`'s auth token could not be loaded.
    #[error("twilio: {0}")]
    Twilio(String),
    /// A key of `[supabase]` or `[zitadel]` could not be loaded.
    #[error("{0}")]
    Hooks(String),
    /// The data directory, key or token file could not be prepared.
    #[error("{what} {path}: {source}")]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory is refused or in use by another process.
    #[error("{0}")]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// `[store]` names a PostgreSQL database this node cannot use as configured.
    #[error("store: {0}")]
    StoreConfig(String),
    /// A modem's PIN could not be read.
    #[error("modem {modem}: {source}")]
    Pin {
        /// The modem's id.
        modem: String,
        /// Why.
        source: crate::config::PinError,
    },
    /// The built-in simulator could not start.
    #[error("cannot start the simulated modem: {0}")]
    Simulator(std::io::Error),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address from `api.listen` / `--listen`.
        addr: SocketAddr,
        /// The I/O error (often: another process holds the port).
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// What `serve` prints in its banner once the daemon listens.
#[derive(Debug, Clone)]
pub struct Started {
    /// The bound address (the real port when `api.listen` asked for port 0).
    pub listen: SocketAddr,
    /// The token file, when the token was created by simgate rather than configured.
    pub token_file: Option<PathBuf>,
    /// The simulator's link and log, under `--simulate`.
    pub simulator: Option<(PathBuf, PathBuf)>,
    /// The data directory.
    pub data_dir: PathBuf,
}

/// The configured store. With PostgreSQL it also checks that this node's OTP keys are the
/// cluster's: a node with other keys would fail every code another node drew, and could not
/// open the texts the others sealed.
async fn open_store(config: &Config, data_dir: &Path, keys: &Keys) -> Result<Store, DaemonError> {
    match &config.store.backend {
        StoreBackend::Sqlite => Ok(Store::open(
            &data_dir.join(DATABASE_FILE),
            StoreOptions::default(),
        )?),
        StoreBackend::Postgres(pg) => {
            let url = pg.url().map_err(DaemonError::StoreConfig)?;
            let store = Store::connect_postgres(PgOptions {
                url,
                node_id: pg.node_id.clone(),
                lease_ms: pg.lease.as_millis() as i64,
                pool_size: pg.pool_size,
                ca_file: pg.ca_file.clone(),
            })
            .await?;
            if let Some(p) = store.postgres() {
                p.adopt_key_fingerprint(&keys.fingerprint())
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::KeysDiffer { cluster, node } => {
                            DaemonError::StoreConfig(format!(
                                "this node's OTP keys ({}, fingerprint {node}) are not the \
                                 cluster's (fingerprint {cluster}): copy the otp-keys file of a \
                                 running node to {} (owner simgate, mode 0600) and start again",
                                crate::otp::key_file_path(data_dir).display(),
                                crate::otp::key_file_path(data_dir).display()
                            ))
                        }
                        other => DaemonError::Store(other),
                    })?;
            }
            tracing::info!(node = %pg.node_id, "store: PostgreSQL, shared with the cluster's other nodes");
            Ok(store)
        }
    }
}

/// Runs the daemon until `shutdown` resolves. `simulate` replaces the configured modems with one
/// built-in simulated modem on a pty, driven through the same driver code path as real hardware.
/// `on_started` is called once the API listens (the banner, and later `sd_notify`).
pub async fn run(
    config: Config,
    simulate: bool,
    on_started: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let data_dir = config.store.data_dir.clone();
    datadir::prepare(&data_dir)?;
    // Held until `run` returns; before anything that recovers, links or binds, so a second
    // daemon on this directory stops here instead of resending the first one's sends.
    let _data_dir_lock = Lock::data_dir(&data_dir)?;

    let (token_file, tokens) = if config.api.tokens.is_empty() {
        let path = data_dir.join(TOKEN_FILE);
        let token = load_or_create_token(&path)?;
        (Some(path), Tokens::new([token]))
    } else {
        (None, Tokens::new(&config.api.tokens))
    };
    let keys = Keys::load_or_create(&data_dir).map_err(|source| DaemonError::File {
        what: "key file in",
        path: data_dir.clone(),
        source,
    })?;
    let store = open_store(&config, &data_dir, &keys).await?;

    // One shutdown signal fanned out to every task.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let (simulator, modem_settings) = if simulate {
        let link = data_dir.join(SIM_LINK);
        let log = data_dir.join(SIM_LOG);
        let sim = Simulator::start(SimOptions {
            link: link.clone(),
            log: Some(log),
            ..SimOptions::default()
        })
        .await
        .map_err(DaemonError::Simulator)?;
        tracing::warn!(
            link = %link.display(),
            "SIMULATED MODEM: no real SMS is sent; texts are appended to {}",
            data_dir.join(SIM_LOG).display()
        );
        // No carrier to protect from SMS pumping: the per-SIM send rate would only slow down
        // the tests and demos the simulator exists for.
        let settings = ModemSettings {
            sends_per_minute: 0,
            ..ModemSettings::new("sim0", link)
        };
        (Some(sim), vec![settings])
    } else {
        (None, config.modems.clone())
    };

    let metrics = Arc::new(Metrics::for_node(store.node_id()));
    // One wall clock for everything that stamps or compares the store's timestamps.
    let clock = Clock::system();
    let wake = Arc::new(Notify::new());
    // Other nodes' enqueues arrive by NOTIFY; this node's service pokes `wake` itself.
    store.forward_queue_wakes(wake.clone());
    let limits = Arc::new(Limits::new(&config.limiter_rates()));
    let service = Arc::new(Service::new(Deps {
        store: store.clone(),
        keys: keys.clone(),
        limits: limits.clone(),
        wake: wake.clone(),
        settings: config.service_settings(),
        clock: clock.clone(),
        codes: service::os_codes(),
    }));
    // Webhook endpoints are registered before anything can record an event (the dispatcher's
    // crash recovery does), so a new endpoint starts exactly after the history it is not sent.
    let mut endpoints = config
        .webhooks
        .iter()
        .map(|w| {
            crate::webhook::deliver::Endpoint::new(w.clone()).map_err(|reason| {
                DaemonError::Webhook {
                    endpoint: w.label(),
                    reason,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Twilio's StatusCallbacks are one more consumer of the outbox.
    if let Some(t) = &config.twilio {
        let token = t.auth_token().map_err(DaemonError::Twilio)?;
        endpoints.push(http::twilio::callback::StatusCallbacks::endpoint(
            service.clone(),
            &t.account_sid,
            &token,
        ));
    }
    crate::webhook::deliver::start(&store, endpoints, Some(metrics.clone()), stop_rx.clone())
        .await?;

    let (events_tx, events_rx) = mpsc::channel(256);
    let mut modems = Vec::new();
    for settings in &modem_settings {
        let pin = settings.pin().map_err(|source| DaemonError::Pin {
            modem: settings.id.clone(),
            source,
        })?;
        let handle = ModemHandle::spawn(
            settings.modem_config(pin, config.inbound.enabled),
            events_tx.clone(),
        );
        modems.push((settings.clone(), handle));
    }
    drop(events_tx);
    for (settings, handle) in &modems {
        tokio::spawn(record_modem_states(
            store.clone(),
            settings.id.clone(),
            handle.status(),
            clock.clone(),
            stop_rx.clone(),
        ));
    }
    let opener_keys = keys.clone();
    let dispatcher = Dispatcher::new(
        store.clone(),
        modems
            .iter()
            .map(|(settings, handle)| settings.pool_modem(handle.clone()))
            .collect(),
        config.dispatch_config(),
        wake.clone(),
        Arc::new(move |sealed: &[u8]| opener_keys.open(sealed).map_err(|e| e.to_string())),
    )
    .with_clock(clock.clone())
    .with_metrics(metrics.clone());
    let dispatcher_task = tokio::spawn(dispatcher.run(stopped(stop_rx.clone())));
    let inbound = config.inbound.enabled.then(|| {
        crate::inbound::Inbound::new(
            store.clone(),
            config.inbound.reassembly_timeout,
            Some(metrics.clone()),
        )
    });
    if let Some(inbound) = &inbound {
        tokio::spawn(
            inbound
                .clone()
                .run_expiry(clock.clone(), stopped(stop_rx.clone())),
        );
    }
    let reports_task = tokio::spawn(dispatch::run_events(
        store.clone(),
        events_rx,
        clock.clone(),
        Some(metrics.clone()),
        inbound,
    ));
    tokio::spawn(dispatch::run_retention(
        store.clone(),
        days(config.store.retention_days),
        days(config.store.mask_numbers_after_days),
        Duration::from_secs(60 * 60),
        clock.clone(),
        stopped(stop_rx.clone()),
    ));

    tokio::spawn(crate::expiry::run(
        store.clone(),
        config.otp.min_ttl,
        clock.clone(),
        stopped(stop_rx.clone()),
    ));

    let modem_source = Arc::new(ModemWatch {
        node: store.node_id().map(str::to_owned),
        local: modems
            .iter()
            .map(|(s, h)| (s.id.clone(), s.device.clone(), h.status()))
            .collect(),
        others: std::sync::Mutex::new(Vec::new()),
    });
    if store.postgres().is_some() {
        tokio::spawn(share_modems(
            store.clone(),
            modem_source.clone(),
            stop_rx.clone(),
        ));
    }
    let housekeeping = tokio::spawn(limiter_housekeeping(
        limits,
        store.clone(),
        clock,
        stop_rx.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let listen = listener.local_addr().map_err(DaemonError::Http)?;
    let state = AppState {
        service,
        tokens: Arc::new(tokens),
        metrics,
        modems: modem_source,
        body_limit: BodyLimit(config.api.max_body_bytes),
        twilio: match &config.twilio {
            None => None,
            Some(t) => Some(Arc::new(
                http::twilio::TwilioApi::new(t, &config.otp.template)
                    .map_err(DaemonError::Twilio)?,
            )),
        },
        hooks: if config.supabase.is_some() || config.zitadel.is_some() {
            Some(Arc::new(
                http::hooks::Hooks::new(&config).map_err(DaemonError::Hooks)?,
            ))
        } else {
            None
        },
    };
    let started = Started {
        listen,
        token_file,
        simulator: simulator
            .as_ref()
            .map(|s| (s.link().to_path_buf(), config.store.data_dir.join(SIM_LOG))),
        data_dir: data_dir.clone(),
    };
    tracing::info!(%listen, "API listening");
    on_started(&started);
    // Under systemd (Type=notify): READY=1 now that the store is open and the API listens, then
    // STATUS= lines and watchdog pings while the daemon is healthy.
    if let Some(notifier) = Notifier::from_env() {
        notifier.ready();
        let statuses = modems
            .iter()
            .map(|(s, h)| (s.id.clone(), h.status()))
            .collect();
        let probe_store = store.clone();
        // The store answering a trivial read proves its threads and the disk are alive.
        let health = move || {
            let store = probe_store.clone();
            async move { store.queue_depth().await.is_ok() }
        };
        tokio::spawn(notify::supervise(
            notifier,
            statuses,
            health,
            stopped(stop_rx.clone()),
        ));
    }
    // The status page (docs/ui.md) shares the API's listener, limits and state; `--simulate`
    // turns it on unless the config says otherwise, so a newcomer's first run shows it.
    let mut app = http::router(state.clone());
    if config.ui.enabled.unwrap_or(simulate) {
        let ui = http::ui::Ui::new(state, config.ui.session, config.ui.secure_cookie)
            .with_inbound(config.inbound.enabled);
        app = app.merge(http::ui::router(Arc::new(ui)));
        tracing::info!(url = %format!("http://{listen}/"), "status page enabled");
    }
    let served = http::server::serve(
        listener,
        app,
        config.api.connections,
        stopped(stop_rx.clone()),
    )
    .await;

    if let Some(notifier) = Notifier::from_env() {
        notifier.stopping();
    }
    // Drain: the dispatcher lets sends in flight finish so their outcome is recorded.
    match dispatcher_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "dispatcher stopped on a store error"),
        Err(e) => tracing::error!(error = %e, "dispatcher task failed"),
        Ok(Ok(())) => {}
    }
    housekeeping.abort();
    for (_, handle) in &modems {
        handle.shutdown().await;
    }
    drop(modems);
    let _ = reports_task.await;
    if let Some(sim) = simulator {
        sim.stop().await;
    }
    served.map_err(DaemonError::Http)
}

/// Resolves when the shutdown flag turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `0` days means "never" in the config.
fn days(n: u32) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(u64::from(n) * 24 * 60 * 60))
}

/// Keyed rate limiters grow with every number and token seen; trim them once a minute.
async fn limiter_housekeeping(
    limits: Arc<Limits>,
    store: Store,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        limits.housekeeping();
        // The shared budgets of a cluster: every node may prune, it is idempotent.
        if let Some(pg) = store.postgres()
            && let Err(e) = pg.prune_rates(clock.now_ms()).await
        {
            tracing::warn!("cannot prune the shared rate limits: {e}");
        }
    }
}

/// Records each change of a modem's state in the event outbox (`modem.state_changed`). The
/// driver publishes its status on a watch channel, which keeps only the latest value, so a state
/// held for less than one scheduling step may be skipped; the states a receiver acts on
/// (ready, disconnected, sim errors) last far longer.
async fn record_modem_states(
    store: Store,
    modem_id: String,
    mut status: watch::Receiver<ModemStatus>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<String> = None;
    loop {
        let (state, detail) = {
            let s = status.borrow_and_update();
            (s.state.as_str().to_owned(), s.last_error.clone())
        };
        if last.as_deref() != Some(state.as_str()) {
            if let Err(e) = store
                .record_modem_state(
                    &modem_id,
                    last.as_deref(),
                    &state,
                    detail.as_deref(),
                    clock.now_ms(),
                )
                .await
            {
                tracing::error!(modem = %modem_id, error = %e, "cannot record a modem state change");
            }
            last = Some(state);
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `/v1/modems` and `/readyz` read the drivers' published status; in a cluster, also the
/// modems the other live nodes published (`ClusterModems`).
struct ModemWatch {
    /// This node's name in a cluster.
    node: Option<String>,
    /// This node's modems.
    local: Vec<(String, PathBuf, watch::Receiver<ModemStatus>)>,
    /// The other live nodes' modems, as last read from the database.
    others: std::sync::Mutex<Vec<ModemJson>>,
}

impl ModemSource for ModemWatch {
    fn snapshot(&self) -> Vec<ModemJson> {
        let mut all = self.local_snapshot();
        all.extend(
            self.others
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        all
    }
}

impl ModemWatch {
    fn local_snapshot(&self) -> Vec<ModemJson> {
        self.local
            .iter()
            .map(|(id, device, rx)| {
                let s = rx.borrow();
                ModemJson {
                    node: self.node.clone(),
                    id: id.clone(),
                    // The port the driver bound (found by identity, or the configured path),
                    // else the configured path while nothing is bound.
                    device: s.device.as_deref().unwrap_or(device).display().to_string(),
                    state: s.state.as_str().to_owned(),
                    manufacturer: s.manufacturer.clone(),
                    model: s.model.clone(),
                    imei: s.imei.clone(),
                    iccid: s.iccid.clone(),
                    imsi: s.imsi.clone(),
                    smsc: s.smsc.clone(),
                    last_error: s.last_error.clone(),
                    operator: s.operator.clone(),
                    registration: s.registration.clone(),
                    signal: s.signal_dbm,
                    sent: s.sent,
                    failed: s.failed,
                }
            })
            .collect()
    }
}

/// In a cluster: publishes this node's modems every second and reads the other live nodes',
/// so `/v1/modems` and `/readyz` on any node answer for the whole cluster. A node that cannot
/// reach the database shows only its own modems (and `/readyz` says why it is not ready).
async fn share_modems(store: Store, watch: Arc<ModemWatch>, mut stop: watch::Receiver<bool>) {
    let Some(pg) = store.postgres() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A write only when something changed, or a third of the lease after the last one (the
    // renewal task keeps `last_seen` fresh too): an idle cluster writes almost nothing.
    let refresh = Duration::from_millis((pg.lease_ms() / 3).max(1000) as u64);
    let mut published: Option<(String, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Clock::system().now_ms();
        let mine = serde_json::to_string(&watch.local_snapshot()).unwrap_or_else(|_| "[]".into());
        let stale = published
            .as_ref()
            .is_none_or(|(json, at)| *json != mine || at.elapsed() >= refresh);
        let written = if stale {
            pg.publish_modems(&mine, now).await
        } else {
            Ok(())
        };
        if stale && written.is_ok() {
            published = Some((mine, tokio::time::Instant::now()));
        }
        let others = match written {
            Ok(()) => pg.other_live_nodes(now).await,
            Err(e) => Err(e),
        };
        let others = match others {
            Ok(nodes) => nodes
                .into_iter()
                .flat_map(|n| {
                    let mut modems: Vec<ModemJson> =
                        serde_json::from_str(&n.modems_json).unwrap_or_default();
                    for m in &mut modems {
                        m.node = Some(n.node_id.clone());
                    }
                    modems
                })
                .collect(),
            Err(e) => {
                tracing::debug!("cannot share modem states with the cluster: {e}");
                Vec::new()
            }
        };
        *watch.others.lock().unwrap_or_else(|p| p.into_inner()) = others;
    }
}

/// Reads the API token, creating a random one (mode 0600) at first start. The file must be a
/// regular file only its owner can use, never a symlink (`crate::datadir`).
pub fn load_or_create_token(path: &Path) -> Result<String, DaemonError> {
    let err = |source| DaemonError::File {
        what: "API token file",
        path: path.to_path_buf(),
        source,
    };
    match datadir::open_private(path) {
        Ok(mut file) => {
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(err)?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(err(std::io::Error::other(
                    "is empty; delete it to get a new token",
                )));
            }
            // The same rule as api.tokens: a short token here would be just as guessable.
            if !crate::http::auth::token_follows_rule(&token) {
                return Err(err(std::io::Error::other(format!(
                    "holds a token that breaks the rule ({}); put a longer one in it, or delete \
                     it to get a new random token",
                    crate::http::auth::TOKEN_RULE
                ))));
            }
            Ok(token)
        }
        Err(DataDirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let token = hex::encode(bytes);
            let mut file = datadir::create_new(path)?;
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(err)?;
            Ok(token)
        }
        Err(e) => Err(e.into()),
    }
}
