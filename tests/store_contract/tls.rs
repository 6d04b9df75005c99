//! The PostgreSQL store over TLS (rustls, through tokio-postgres-rustls): it encrypts, and it
//! verifies the server's certificate, its chain to `ca_file` and its host name.
//!
//! PostgreSQL only, and not a `contract!`: each test starts its own server listening on
//! 127.0.0.1 with `ssl = on` and a certificate made here with the `openssl` command from a
//! private CA. Without PostgreSQL or without `openssl` a test says why and returns.
//!
//! Failures expected from the certificate connect with `host=localhost hostaddr=127.0.0.1` (or
//! `host=127.0.0.1`): the TLS name is `host`, the address `hostaddr`, and a machine where
//! `localhost` also resolves to `::1` would otherwise report the last address's "connection
//! refused" instead of the handshake's error.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use simgate::store::{PgOptions, Store};

use crate::pg::{PgCluster, USER};

/// The server's user when the test runs as root (see tests/support/pg.rs).
const UNPRIVILEGED_ID: u32 = 65534;

/// Bounds every connection attempt, so a hung handshake fails the test instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    match crate::pg::find_bin_dir() {
        Ok(Some(_)) => {}
        Ok(None) => return Some(crate::pg::NOT_FOUND.to_string()),
        Err(e) => panic!("{e}"),
    }
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`openssl version` exited with {}", out.status)),
        Err(e) => Some(format!("the openssl command is absent ({e})")),
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A directory of keys and certificates that the server's user can reach.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let root = as_root();
        // As root the server runs as nobody, who must traverse every ancestor (TMPDIR may be
        // under /root).
        let parent = [std::env::temp_dir(), PathBuf::from("/tmp")]
            .into_iter()
            .find(|p| {
                !root
                    || p.ancestors()
                        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
            })
            .expect("a temporary directory that uid 65534 can traverse");
        let dir = tempfile::Builder::new()
            .prefix("simgate-tls-")
            .tempdir_in(&parent)
            .expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the certificate directory");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed CA: `<name>.pem` (returned) and `<name>.key`.
    fn ca(&self, name: &str) -> PathBuf {
        let cnf = self.write(
            &format!("{name}.cnf"),
            &format!(
                "[req]\n\
                 distinguished_name = dn\n\
                 prompt = no\n\
                 x509_extensions = v3_ca\n\
                 [dn]\n\
                 CN = simgate test CA {name}\n\
                 [v3_ca]\n\
                 basicConstraints = critical,CA:TRUE\n\
                 keyUsage = critical,keyCertSign,cRLSign\n\
                 subjectKeyIdentifier = hash\n"
            ),
        );
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-config",
            &cnf.to_string_lossy(),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
        ]);
        self.path(&pem)
    }

    /// A server certificate for `san` (`DNS:…,IP:…`) signed by CA `ca`: (certificate, key), the
    /// key readable by the server's user only, as PostgreSQL insists.
    fn server(&self, ca: &str, name: &str, san: &str, serial: u32) -> (PathBuf, PathBuf) {
        let cnf = self.write(
            &format!("{name}.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = simgate test server\n",
        );
        let ext = self.write(
            &format!("{name}.ext"),
            &format!(
                "basicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\n\
                 subjectAltName = {san}\n\
                 subjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n"
            ),
        );
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-config",
            &cnf.to_string_lossy(),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext.to_string_lossy(),
            "-out",
            &pem,
        ]);
        let key = self.path(&key);
        if as_root() {
            chown(&key, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID)).expect("chown the key");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the key");
        std::fs::set_permissions(self.path(&pem), std::fs::Permissions::from_mode(0o644))
            .expect("chmod the certificate");
        (self.path(&pem), key)
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A server on 127.0.0.1 that offers TLS with `cert`, and a fresh database on it.
fn tls_server(cert: &Path, key: &Path) -> (PgCluster, String) {
    let port = free_port().to_string();
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let cluster = PgCluster::start(&[
        ("listen_addresses", "127.0.0.1"),
        ("port", &port),
        ("ssl", "on"),
        ("ssl_cert_file", &cert),
        ("ssl_key_file", &key),
    ])
    .unwrap_or_else(|e| panic!("start a PostgreSQL server with TLS: {e}"));
    let unix = cluster.create_database();
    let dbname = unix
        .parse::<tokio_postgres::Config>()
        .expect("the harness's connection string")
        .get_dbname()
        .expect("a database name")
        .to_owned();
    (cluster, dbname)
}

/// A TCP connection string for `dbname` on `cluster`; `rest` adds host, sslmode and the like.
fn tcp_url(cluster: &PgCluster, dbname: &str, rest: &str) -> String {
    format!("port={} user={USER} dbname={dbname} {rest}", cluster.port())
}

async fn connect_store(url: &str, ca_file: Option<&Path>) -> Result<Store, String> {
    let opts = PgOptions {
        pool_size: 2,
        ca_file: ca_file.map(Path::to_path_buf),
        ..PgOptions::new(url, "node-tls")
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, Store::connect_postgres(opts)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
    }
}

/// The trust roots the store uses for `ca_file`: the file's certificates, or the public roots.
fn roots(ca_file: Option<&Path>) -> rustls::RootCertStore {
    match ca_file {
        Some(ca) => simgate::store::pg::load_roots(ca).expect("the CA as trust roots"),
        None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
}

/// A raw connection verifying the server as the store does (same provider, versions, roots).
async fn raw_tls_connect(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<tokio_postgres::Client, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS protocol versions")
    .with_root_certificates(roots(ca_file))
    .with_no_client_auth();
    let connecting =
        tokio_postgres::connect(url, tokio_postgres_rustls::MakeRustlsConnect::new(config));
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(chain(&e)),
        Err(_) => return Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// An error with its sources: `tokio_postgres::Error`'s `Display` names only its kind.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Asserts that the store refuses to connect in the TLS handshake and says why, for `reason`
/// (rustls's words), and that a raw connection with the same TLS configuration is refused for
/// the same reason.
async fn assert_refused(case: &str, url: &str, ca_file: Option<&Path>, reason: &str) {
    match connect_store(url, ca_file).await {
        Ok(_) => panic!("{case}: the store connected ({url})"),
        Err(e) => {
            println!("{case}: the store refused: {e}");
            assert!(
                e.contains("TLS handshake") && e.contains(reason),
                "{case}: the store's error must name the handshake and why ({reason}): {e}"
            );
        }
    }
    match raw_tls_connect(url, ca_file).await {
        Ok(_) => panic!("{case}: a raw connection with the store's TLS settings connected"),
        Err(e) => {
            println!("{case}: why (raw connection): {e}");
            assert!(
                e.contains("invalid peer certificate") && e.contains(reason),
                "{case}: not refused for {reason:?}: {e}"
            );
        }
    }
}

async fn raw_plain_client(url: &str) -> tokio_postgres::Client {
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .expect("a connection in time")
        .expect("a raw plain connection");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `(ssl, TLS version)` of `client`'s own session.
async fn own_ssl(client: &tokio_postgres::Client) -> (bool, Option<String>) {
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// Client sessions over TCP to `dbname`: (encrypted, in the clear).
async fn tcp_sessions(client: &tokio_postgres::Client, dbname: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.backend_type = 'client backend' AND a.client_addr IS NOT NULL
               AND a.datname = $1",
            &[&dbname],
        )
        .await
        .expect("pg_stat_activity");
    (row.get(0), row.get(1))
}

/// Whether the store's listener session (its last statement is the `LISTEN`) is encrypted;
/// waits for the listener, which connects in the background, to appear.
async fn listener_ssl(client: &tokio_postgres::Client, dbname: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = client
            .query_opt(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = $1 AND a.query LIKE 'LISTEN simgate_queue%'",
                &[&dbname],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the store's listener session did not appear within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server certificate from a private CA for localhost/127.0.0.1: the store connects with
/// `ca_file`, and every session it opens is encrypted; without `ca_file` (the public roots) it
/// refuses the server, under `sslmode=require` as under the default `prefer`; `sslmode=disable`
/// connects in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_against_the_private_ca() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.server("ca", "server", "DNS:localhost,IP:127.0.0.1", 2);
    let (cluster, db) = tls_server(&cert, &key);

    // The private CA in ca_file: connects, over TLS.
    let url = tcp_url(&cluster, &db, "host=localhost sslmode=require");
    let store = connect_store(&url, Some(&ca))
        .await
        .unwrap_or_else(|e| panic!("connect over TLS with the private CA: {e}"));
    assert_eq!(store.queue_depth().await.expect("a store call over TLS"), 0);

    let raw = raw_tls_connect(&url, Some(&ca))
        .await
        .unwrap_or_else(|e| panic!("a raw TLS connection: {e}"));
    let (ssl, version) = own_ssl(&raw).await;
    assert!(ssl, "the raw session is not encrypted");
    println!("raw session: ssl = {ssl}, version = {version:?}");
    assert!(
        listener_ssl(&raw, &db).await,
        "the store's listener session is not encrypted"
    );
    let (encrypted, clear) = tcp_sessions(&raw, &db).await;
    println!("TCP sessions to {db}: {encrypted} encrypted, {clear} in the clear");
    // The store's pooled session(s), its listener, and the raw one.
    assert!(encrypted >= 3, "only {encrypted} encrypted sessions");
    assert_eq!(clear, 0, "sessions in the clear");
    drop(raw);
    drop(store);

    // The public roots only: the private CA is not trusted.
    let pinned = "host=localhost hostaddr=127.0.0.1";
    assert_refused(
        "sslmode=require without ca_file",
        &tcp_url(&cluster, &db, &format!("{pinned} sslmode=require")),
        None,
        "UnknownIssuer",
    )
    .await;
    // Nor under the default sslmode (prefer): a server that offers TLS is verified too.
    assert_refused(
        "default sslmode without ca_file",
        &tcp_url(&cluster, &db, pinned),
        None,
        "UnknownIssuer",
    )
    .await;

    // sslmode=disable: TCP in the clear, certificates irrelevant.
    let plain_url = tcp_url(&cluster, &db, "host=localhost sslmode=disable");
    let store = connect_store(&plain_url, None)
        .await
        .unwrap_or_else(|e| panic!("connect with sslmode=disable: {e}"));
    assert_eq!(store.queue_depth().await.expect("a store call"), 0);
    let raw = raw_plain_client(&plain_url).await;
    assert!(!own_ssl(&raw).await.0, "sslmode=disable yet encrypted");
    assert!(
        !listener_ssl(&raw, &db).await,
        "sslmode=disable yet the listener is encrypted"
    );
    drop(raw);
    drop(store);
}

/// A certificate that chains to `ca_file` but names another host (db.example only): refused for
/// 127.0.0.1 and for localhost, accepted when the host name is db.example (the address still
/// 127.0.0.1), so the name is what failed; and the right name under a CA that did not sign it
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_name_verified() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let other_ca = pki.ca("other-ca");
    let (cert, key) = pki.server("ca", "elsewhere", "DNS:db.example", 3);
    let (cluster, db) = tls_server(&cert, &key);

    assert_refused(
        "host=127.0.0.1, certificate for db.example",
        &tcp_url(&cluster, &db, "host=127.0.0.1 sslmode=require"),
        Some(&ca),
        "not valid for name",
    )
    .await;
    assert_refused(
        "host=localhost, certificate for db.example",
        &tcp_url(
            &cluster,
            &db,
            "host=localhost hostaddr=127.0.0.1 sslmode=require",
        ),
        Some(&ca),
        "not valid for name",
    )
    .await;

    let named = tcp_url(
        &cluster,
        &db,
        "host=db.example hostaddr=127.0.0.1 sslmode=require",
    );
    let store = connect_store(&named, Some(&ca))
        .await
        .unwrap_or_else(|e| panic!("connect as db.example: {e}"));
    assert_eq!(store.queue_depth().await.expect("a store call over TLS"), 0);
    drop(store);

    assert_refused(
        "ca_file of another CA",
        &named,
        Some(&other_ca),
        "UnknownIssuer",
    )
    .await;
}
