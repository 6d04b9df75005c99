//! The PostgreSQL back end: several `simgate serve` nodes share one database.
//!
//! Where it differs from SQLite, and why:
//!
//! - **Concurrency is the database's.** There is no writer thread: each operation is one
//!   transaction on a pooled connection, at READ COMMITTED, and takes the row or advisory locks
//!   its invariant needs. An OTP's verify locks the OTP's row (`FOR UPDATE`), so two nodes
//!   checking the right code at once approve it once; everything keyed by a phone number
//!   (superseding, the daily cap) runs under a transaction-scoped advisory lock on the number,
//!   so numbers do not wait for each other; idempotency keys are claimed by the primary key.
//! - **Claims are leased.** `claim_next` takes the oldest due message with `FOR UPDATE SKIP
//!   LOCKED`, stamps it with this node's id and a lease (`lease_until`); a task renews the
//!   leases of this node's sends in flight. A message whose lease ran out (its node died or lost
//!   the database) is recovered by any node under the unknown-outcome rule
//!   (`recover_abandoned`), so a message is sent by at most one node at a time.
//! - **Wake-ups travel by `LISTEN/NOTIFY`**, sent after the commit by a notifier task on its own
//!   connection, not inside the transaction: PostgreSQL commits a transaction that notified
//!   under one server-wide lock held through its WAL flush, which would make every durable
//!   enqueue of the cluster wait its turn (measured: 500 instead of thousands of commits/s).
//!   Commits while a notification is under way coalesce into the next one.
//! - **Durability**: client-facing commits use the server's `synchronous_commit` (on by
//!   default: a `202` means the WAL is flushed); the dispatcher's bookkeeping sets it `off` for
//!   its transaction, as SQLite's `Balanced` skips the fsync, for the same reason.
//! - **Status reports** are matched by (node, modem, TP-MR): modem ids are unique per node only.
//!
//! Files: `schema.rs` (migrations), `common.rs` (the row helpers every family shares, the
//! outbox's `record`), then one file per family of the store interface, as on the SQLite side.

mod common;
mod events;
mod inbound;
mod messages;
mod nodes;
mod otps;
mod queue;
mod rates;
mod schema;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;

use super::StoreError;
use crate::model::Millis;

pub use nodes::NodeModems;
pub use schema::CURRENT_VERSION as PG_SCHEMA_VERSION;

/// How to reach the shared database and who this node is.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq connection string (`postgresql://user@host/db?sslmode=require` or
    /// `host=/run/postgresql dbname=simgate`).
    pub url: String,
    /// This node's name, unique in the cluster (defaults to the host name in the config).
    pub node_id: String,
    /// How long a claim lasts without renewal. Renewed every third of it.
    pub lease_ms: Millis,
    /// Most connections this node opens (the listener's not counted).
    pub pool_size: usize,
    /// PEM certificates a TLS server's certificate must chain to; `None`: the public web
    /// roots (Mozilla's, built in), which a private database's certificate rarely chains to.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgOptions {
    /// Options with the daemon's defaults for everything but the url and the node.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            node_id: node_id.into(),
            lease_ms: 30_000,
            pool_size: 16,
            ca_file: None,
        }
    }
}

/// The PostgreSQL store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    node_id: String,
    lease_ms: Millis,
    /// Poked after this node's commits and by `NOTIFY simgate_events`.
    outbox: Arc<Notify>,
    /// Dispatcher wake-ups to poke on `NOTIFY simgate_queue`.
    queue_wakes: Mutex<Vec<Arc<Notify>>>,
    /// Pokes the notifier task (see the module doc): a commit wrote something others must hear.
    notifier: Arc<Notify>,
    /// False while the last renewal or listener connection failed: this node cannot keep its
    /// claims and must not take new ones.
    connected: AtomicBool,
    /// Stops the background tasks when the last handle goes.
    stop: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.notify_waiters();
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// An error the server answered is a refusal of the statement; any other (I/O, closed
    /// connection, timeout) means the database could not be reached.
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(_) => StoreError::Postgres(pg_error_text(&e)),
            None => StoreError::Unavailable(with_causes(&e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("connection pool: {other}")),
        }
    }
}

/// The server's own message (with its SQLSTATE) when there is one: `Display` of a
/// `tokio_postgres::Error` says only "db error".
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => with_causes(e),
    }
}

/// An error and its causes: tokio-postgres's own text names only the kind ("error performing
/// TLS handshake"); why — an unknown issuer, a certificate for another name, a refused
/// connection — is in its sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The certificates of `path` (PEM) as trust roots, or why not.
pub fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        return Err(format!(
            "{} holds {ignored} certificate(s) rustls cannot use as a trust root: remove or \
             replace them",
            path.display()
        ));
    }
    if added == 0 {
        return Err(format!(
            "{} holds no usable certificate (a PEM file with -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

/// TLS for connections that ask for it (`sslmode=require` and above, or `prefer` with a
/// server that offers it): rustls, verifying the server's certificate against `ca_file` or
/// the public roots.
fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = match ca_file {
        Some(path) => load_roots(path).map_err(StoreError::Postgres)?,
        None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Postgres(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) requires this ALPN protocol; the
    // classic negotiation ignores it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(crate) fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Postgres(format!("store url: {}", with_causes(&e))))
}

fn application_name(node_id: &str) -> String {
    format!("simgate {node_id}")
}

fn wall_now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl Postgres {
    /// Connects, migrates (one node at a time, under an advisory lock) and starts the listener
    /// and lease renewal tasks. Fails when the database cannot be reached: a node that starts
    /// without its queue would accept nothing anyway.
    pub async fn connect(opts: PgOptions) -> Result<Postgres, StoreError> {
        let mut config = parse_url(&opts.url)?;
        // Names this node's sessions in `pg_stat_activity`, and its own queue notifications.
        config.application_name(application_name(&opts.node_id));
        let tls = tls(opts.ca_file.as_deref())?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        {
            let mut client = pool.get().await?;
            schema::migrate(&mut client).await?;
        }
        let inner = Arc::new(Inner {
            pool,
            node_id: opts.node_id,
            lease_ms: opts.lease_ms.max(1000),
            outbox: Arc::new(Notify::new()),
            queue_wakes: Mutex::new(Vec::new()),
            notifier: Arc::new(Notify::new()),
            connected: AtomicBool::new(true),
            stop: Arc::new(Notify::new()),
        });
        tokio::spawn(notify_others(
            Arc::downgrade(&inner),
            config.clone(),
            tls.clone(),
            inner.notifier.clone(),
            inner.stop.clone(),
        ));
        tokio::spawn(listen(
            Arc::downgrade(&inner),
            config,
            tls,
            inner.stop.clone(),
        ));
        tokio::spawn(renew(Arc::downgrade(&inner), inner.stop.clone()));
        Ok(Postgres { inner })
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// How long a claim lasts without renewal.
    pub fn lease_ms(&self) -> Millis {
        self.inner.lease_ms
    }

    /// Whether this node currently reaches the database (last renewal and listener fine).
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn outbox_wake(&self) -> Arc<Notify> {
        self.inner.outbox.clone()
    }

    pub(crate) fn forward_queue_wakes(&self, wake: Arc<Notify>) {
        self.inner
            .queue_wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(wake);
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.inner.pool.get().await?)
    }

    /// Called after every commit that queued a message or wrote events: wakes this node's
    /// outbox readers at once, and has the notifier tell the other nodes.
    pub(crate) fn committed(&self) {
        self.inner.outbox.notify_waiters();
        self.inner.notifier.notify_one();
    }

    /// Records `fingerprint` as the cluster's OTP keys if none is yet, else insists on it:
    /// every node must hold the same keys (see `otp::Keys::fingerprint`).
    pub async fn adopt_key_fingerprint(&self, fingerprint: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH mine AS (
                     INSERT INTO cluster_settings (name, value) VALUES ('key_fingerprint', $1)
                     ON CONFLICT (name) DO NOTHING RETURNING value)
                 SELECT value FROM mine
                 UNION ALL
                 SELECT value FROM cluster_settings WHERE name = 'key_fingerprint'
                 LIMIT 1",
                &[&fingerprint],
            )
            .await?;
        let cluster: String = row.try_get(0)?;
        if cluster == fingerprint {
            Ok(())
        } else {
            Err(StoreError::KeysDiffer {
                cluster,
                node: fingerprint.to_owned(),
            })
        }
    }

    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        let client = self.client().await?;
        schema::version(&client).await
    }
}

/// The listener connection: `LISTEN` on both channels and poke the matching `Notify`. On loss
/// it reconnects with backoff and then pokes everything, since notifications sent meanwhile are
/// gone.
async fn listen(
    inner: std::sync::Weak<Inner>,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    stop: Arc<Notify>,
) {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(200);
    loop {
        let stopped = stop.notified();
        tokio::pin!(stopped);
        let attempt = async {
            let (client, mut connection) = config.connect(tls.clone()).await?;
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            // The LISTEN itself travels through `connection`, which only the stream drives.
            let subscribe = client.batch_execute("LISTEN simgate_queue; LISTEN simgate_events");
            tokio::pin!(subscribe);
            loop {
                tokio::select! {
                    r = &mut subscribe => { r?; break; }
                    m = messages.next() => match m {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e),
                        None => return Ok(()),
                    },
                }
            }
            let Some(me) = inner.upgrade() else {
                return Ok(());
            };
            // Anything sent while we were away is lost: look again.
            poke_all(&me);
            me.connected.store(true, Ordering::Relaxed);
            drop(me);
            while let Some(m) = messages.next().await {
                let Some(me) = inner.upgrade() else {
                    return Ok(());
                };
                if let tokio_postgres::AsyncMessage::Notification(n) = m? {
                    match n.channel() {
                        "simgate_queue" if n.payload() == application_name(&me.node_id) => {}
                        "simgate_queue" => poke_queue(&me),
                        _ => me.outbox.notify_waiters(),
                    }
                }
            }
            Ok::<(), tokio_postgres::Error>(())
        };
        tokio::select! {
            _ = &mut stopped => return,
            r = attempt => {
                let Some(me) = inner.upgrade() else { return };
                me.connected.store(false, Ordering::Relaxed);
                match r {
                    Ok(()) => tracing::warn!(node = %me.node_id, "store: the database closed the listener connection; reconnecting"),
                    Err(e) => tracing::warn!(node = %me.node_id, "store: listener connection lost: {}; reconnecting", pg_error_text(&e)),
                }
            }
        }
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Tells the other nodes, after the commits that poked `notifier`, that the queue and the
/// outbox may have news: one `NOTIFY` per channel in one statement, on a connection of its own
/// whose commits need not be durable (a lost notification costs a wake-up, which the
/// dispatcher's periodic look for abandoned claims also gives). Pokes that arrive while one is
/// under way make exactly one more.
async fn notify_others(
    inner: std::sync::Weak<Inner>,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    notifier: Arc<Notify>,
    stop: Arc<Notify>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            _ = notifier.notified() => {}
        }
        if inner.strong_count() == 0 {
            return;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match config.connect(tls.clone()).await {
                Ok((c, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    match c.batch_execute("SET synchronous_commit = off").await {
                        Ok(()) => Some(c),
                        Err(_) => None,
                    }
                }
                Err(e) => {
                    tracing::debug!("store: notifier cannot connect: {}", with_causes(&e));
                    None
                }
            };
        }
        let Some(c) = &client else {
            // The listener's reconnect pokes everyone anyway; try again at the next commit.
            continue;
        };
        if let Err(e) = c
            .execute(
                "SELECT pg_notify('simgate_queue', current_setting('application_name')),
                        pg_notify('simgate_events', '')",
                &[],
            )
            .await
        {
            tracing::debug!("store: cannot notify the other nodes: {}", with_causes(&e));
            client = None;
        }
    }
}

fn poke_queue(inner: &Inner) {
    for wake in inner
        .queue_wakes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        wake.notify_one();
    }
}

fn poke_all(inner: &Inner) {
    poke_queue(inner);
    inner.outbox.notify_waiters();
}

/// Renews this node's leases every third of the lease time, and records that the node is
/// alive (`nodes.last_seen`). A failure marks the node disconnected: its claims will lapse and
/// other nodes take them over, so it must stop claiming until the database answers again.
async fn renew(inner: std::sync::Weak<Inner>, stop: Arc<Notify>) {
    loop {
        let period = match inner.upgrade() {
            Some(me) => Duration::from_millis((me.lease_ms / 3).max(100) as u64),
            None => return,
        };
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(me) = inner.upgrade() else { return };
        let store = Postgres { inner: me };
        match store.renew_leases(wall_now()).await {
            Ok(()) => {
                if !store.inner.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %store.inner.node_id, "store: the database answers again");
                }
            }
            Err(e) => {
                if store.inner.connected.swap(false, Ordering::Relaxed) {
                    tracing::error!(node = %store.inner.node_id, "store: cannot renew this node's claims: {e}; not claiming until the database answers (other nodes take over claims older than {} ms)", store.inner.lease_ms);
                }
            }
        }
    }
}
