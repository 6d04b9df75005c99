//! The PostgreSQL test harness (tests/support/pg.rs) starts real servers, isolates tests by
//! database, applies settings and stops what it started. Skips only when the server binaries are
//! not installed.

#[path = "support/pg.rs"]
mod pg;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio_postgres::NoTls;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
        .get(0)
}

fn process_exists(pid: u32) -> bool {
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => panic!("probe pid {pid}: {e}"),
    }
}

/// The effective uid in /proc/<pid>/status: "Uid:\treal\teffective\tsaved\tfs".
fn effective_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(2)
        .expect("effective uid")
        .parse()
        .expect("numeric uid")
}

#[tokio::test]
async fn shared_cluster_runs_with_test_settings_or_skips_when_not_installed() {
    let available = pg::pg_available();
    let Some(cluster) = pg::shared() else {
        assert!(!available, "binaries found, yet shared() skipped");
        return;
    };
    assert!(available);
    assert!(process_exists(cluster.pid()));
    // PostgreSQL refuses root; the harness must have dropped to nobody.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let expected_uid = if euid == 0 { 65534 } else { euid };
    assert_eq!(effective_uid(cluster.pid()), expected_uid);

    let client = connect(&cluster.create_database()).await;
    assert_eq!(show(&client, "fsync").await, "off");
    assert_eq!(show(&client, "synchronous_commit").await, "off");
    assert_eq!(show(&client, "full_page_writes").await, "off");
    assert_eq!(show(&client, "max_connections").await, "300");
    assert_eq!(show(&client, "shared_buffers").await, "64MB");
    // Unix socket only: nothing listens on TCP.
    assert_eq!(show(&client, "listen_addresses").await, "");
    assert_eq!(show(&client, "server_encoding").await, "UTF8");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, pg::USER);
}

#[tokio::test]
async fn each_database_is_isolated() {
    let Some(cluster) = pg::shared() else { return };
    let first_url = cluster.create_database();
    let second_url = cluster.create_database();
    assert_ne!(first_url, second_url);

    let first = connect(&first_url).await;
    let second = connect(&second_url).await;
    first
        .batch_execute("CREATE TABLE only_here (id int); INSERT INTO only_here VALUES (1)")
        .await
        .unwrap();
    let count: i64 = first
        .query_one("SELECT count(*) FROM only_here", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    let err = second
        .query_one("SELECT count(*) FROM only_here", &[])
        .await
        .expect_err("the table must not exist in the other database");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
        "{err}"
    );
    let first_db: String = first
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    let second_db: String = second
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(first_db, second_db);
}

#[tokio::test]
async fn started_cluster_applies_settings() {
    if !pg::pg_available() {
        eprintln!("skipping: {}", pg::NOT_FOUND);
        return;
    }
    let cluster = pg::PgCluster::start(&[("fsync", "on"), ("synchronous_commit", "on")])
        .unwrap_or_else(|e| panic!("{e}"));
    let client = connect(&cluster.create_database()).await;
    assert_eq!(show(&client, "fsync").await, "on");
    assert_eq!(show(&client, "synchronous_commit").await, "on");
    // Settings not overridden keep their test defaults.
    assert_eq!(show(&client, "full_page_writes").await, "off");
}

#[tokio::test]
async fn dropping_a_started_cluster_stops_its_server() {
    if !pg::pg_available() {
        eprintln!("skipping: {}", pg::NOT_FOUND);
        return;
    }
    let cluster = pg::PgCluster::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    let postmaster = cluster.pid();
    let dir = cluster.socket_dir().to_path_buf();
    // An open session must not hold the shutdown up: fast shutdown cuts it.
    let client = connect(&cluster.create_database()).await;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(process_exists(postmaster));
    assert!(process_exists(backend as u32));

    drop(cluster);

    assert!(
        !process_exists(postmaster),
        "postmaster {postmaster} survived"
    );
    assert!(
        !process_exists(backend as u32),
        "backend {backend} survived"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
}
