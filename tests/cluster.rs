//! Several `simgate serve` nodes on one PostgreSQL database, black-box: real daemon processes
//! on loopback, each with its own `simgate sim` modem on a real pty, one throwaway PostgreSQL
//! server (tests/support/pg.rs), SIGKILL for node deaths.
//!
//! - failover: load spread over two nodes, one node killed at a random moment, five rounds
//!   with a printed seed: every accepted message reaches a simulator, duplicates are at most
//!   the sends in flight on the killed node (its `sending` rows at the kill), and the survivor
//!   finishes the dead node's claimed messages within the lease plus one send (plus slack);
//! - the OTP invariants across nodes: 10,000 wrong guesses split over two nodes count exactly
//!   `max_attempts`; eight concurrent right codes over two nodes approve once; the per-number
//!   limit holds across the nodes;
//! - cross-node wake-ups (`LISTEN/NOTIFY`): a message posted to a node without a ready modem is
//!   sent by another node at once, not after a poll;
//! - `/v1/modems` and `/readyz` answer for the whole cluster.
//!
//! Skips with a printed reason when the PostgreSQL server binaries are absent.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faults::daemon::pg;
use faults::{ServeProcess, TOKEN, code_in, request};
use serde_json::{Value, json};
use support::SimProcess;

/// The shortest lease the config allows: node deaths are noticed this long after the fact.
const LEASE_SECS: u64 = 5;

/// One node: its modem, its daemon and its data directory.
struct Node {
    id: String,
    sim: SimProcess,
    data_dir: PathBuf,
    config: String,
    serve: Option<ServeProcess>,
}

impl Node {
    fn serve(&self) -> &ServeProcess {
        self.serve.as_ref().expect("node running")
    }

    /// SIGKILL: ServeProcess's drop kills the child and reaps it.
    fn kill(&mut self) {
        drop(self.serve.take());
    }

    fn start(&mut self) {
        let serve = ServeProcess::start(&self.data_dir, &self.config, "simgate=debug,info");
        serve.wait_state("ready", Duration::from_secs(30));
        self.serve = Some(serve);
    }
}

/// A cluster of nodes on a fresh database of the shared PostgreSQL server.
struct Cluster {
    url: String,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (with the reason printed) without PostgreSQL. `limits` is the `[limits]`
    /// table's body, `sim_args` the simulators' flags; node `i`'s modem device is
    /// `devices[i]` when given (a path no modem answers on makes a node without a ready
    /// modem), else its simulator's link.
    fn start(
        n: usize,
        limits: &str,
        sim_args: &[&str],
        devices: &[Option<&str>],
    ) -> Option<Cluster> {
        let cluster = pg::shared()?;
        let url = cluster.create_database();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..n {
            let id = format!("node-{}", (b'a' + i as u8) as char);
            let sim = SimProcess::start(sim_args);
            let device = devices
                .get(i)
                .copied()
                .flatten()
                .map(PathBuf::from)
                .unwrap_or_else(|| sim.link.clone());
            let config = format!(
                "[api]\ntokens = [\"{TOKEN}\"]\n\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n\
                 node_id = \"{id}\"\nlease_seconds = {LEASE_SECS}\n\n[limits]\n{limits}\n\n\
                 [[modem]]\ndevice = \"{}\"\nsends_per_minute = 0\nsend_timeout_seconds = 5\n",
                url.replace('\\', "\\\\").replace('"', "\\\""),
                device.display()
            );
            let data_dir = dir.path().join(&id);
            let mut node = Node {
                id,
                sim,
                data_dir,
                config,
                serve: None,
            };
            // Every node must hold the first node's OTP keys (it verifies codes the others
            // drew and opens texts they sealed); the daemon refuses to start otherwise.
            if let Some(first) = nodes.first() {
                std::fs::create_dir_all(&node.data_dir).expect("data dir");
                copy_private(
                    &first.data_dir.join("otp-keys"),
                    &node.data_dir.join("otp-keys"),
                );
            }
            if devices.get(i).copied().flatten().is_some() {
                let serve = ServeProcess::start(&node.data_dir, &node.config, "simgate=debug,info");
                node.serve = Some(serve);
            } else {
                node.start();
            }
            nodes.push(node);
        }
        Some(Cluster {
            url,
            nodes,
            _dir: dir,
        })
    }

    /// Every line every simulator logged.
    fn sim_lines(&self) -> Vec<Value> {
        self.nodes.iter().flat_map(|n| n.sim.log_lines()).collect()
    }

    /// Runs `sql` (one text parameter) on the cluster's database; the first column as text.
    fn query(&self, sql: &str, param: &str) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the cluster's database");
            tokio::spawn(conn);
            client
                .query(sql, &[&param])
                .await
                .expect("query")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()
        })
    }
}

fn copy_private(from: &Path, to: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = std::fs::read(from).expect("read key file");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .expect("create key file");
    std::io::Write::write_all(&mut f, &bytes).expect("write key file");
}

/// A small deterministic generator; the seed is printed so a failing run can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

fn post(base: &str, path: &str, body: &Value) -> Option<faults::Answer> {
    let bearer = format!("Bearer {TOKEN}");
    request(
        base,
        "POST",
        path,
        Some(body.to_string()),
        &[("Authorization", &bearer)],
    )
    .ok()
}

fn get(base: &str, path: &str) -> faults::Answer {
    let bearer = format!("Bearer {TOKEN}");
    request(base, "GET", path, None, &[("Authorization", &bearer)])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn a_node_killed_under_load_loses_nothing_and_the_survivor_takes_over() {
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 3;
    let seed = std::env::var("SIMGATE_FAILOVER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("failover test seed: {seed} (replay with SIMGATE_FAILOVER_SEED={seed})");
    let mut rng = Lcg(seed);
    // 100 ms of network time per text: at any moment a node has a send on the wire.
    let Some(mut cluster) =
        Cluster::start(2, "otp_per_number = \"off\"", &["--send-delay", "0.1"], &[])
    else {
        return;
    };

    // text -> (message id, node it was posted to)
    let accepted: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut takeovers: Vec<Duration> = Vec::new();
    // Messages the killed node held in `sending` at each kill: the sends in flight.
    let mut in_flight = 0usize;
    let mut counter = 0usize;
    for round in 0..ROUNDS {
        let victim = rng.next(2) as usize;
        let survivor = 1 - victim;
        let bases: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
            cluster
                .nodes
                .iter()
                .map(|n| n.serve().base.clone())
                .collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(counter));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (bases, stop, next, accepted) =
                    (bases.clone(), stop.clone(), next.clone(), accepted.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let text = format!("failover r{round} m{n}");
                        let base = {
                            let b = bases.lock().unwrap();
                            b[(n + c) % b.len()].clone()
                        };
                        let body =
                            json!({ "to": format!("+4477009{:05}", n % 100_000), "text": text });
                        if let Some(a) = post(&base, "/v1/messages", &body)
                            && a.status == 202
                        {
                            let id = a.body["id"].as_str().expect("id").to_owned();
                            accepted.lock().unwrap().insert(text, id);
                        }
                        std::thread::sleep(Duration::from_millis(40));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500 + rng.next(2000)));
        // Only the survivor takes new requests from here on.
        {
            let mut b = bases.lock().unwrap();
            *b = vec![cluster.nodes[survivor].serve().base.clone()];
        }
        let dead_id = cluster.nodes[victim].id.clone();
        cluster.nodes[victim].kill();
        let killed_at = Instant::now();
        let claimed = cluster.query(
            "SELECT id FROM messages WHERE status = 'sending' AND node_id = $1",
            &dead_id,
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client");
        }
        counter = next.load(Ordering::Relaxed);

        // The survivor finishes what the dead node held.
        let deadline = killed_at + Duration::from_secs(LEASE_SECS + 30);
        let base = cluster.nodes[survivor].serve().base.clone();
        for id in &claimed {
            loop {
                let m = get(&base, &format!("/v1/messages/{id}")).body;
                if !matches!(m["status"].as_str(), Some("queued" | "sending")) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {id} claimed by the dead {dead_id} is still {} after {:?}; survivor's log:\n{}",
                    m["status"],
                    killed_at.elapsed(),
                    cluster.nodes[survivor].serve().log_tail(40)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        in_flight += claimed.len();
        if !claimed.is_empty() {
            takeovers.push(killed_at.elapsed());
        }
        eprintln!(
            "round {round}: killed {dead_id}, which held {} claimed message(s); taken over after {:?}",
            claimed.len(),
            killed_at.elapsed()
        );
        cluster.nodes[victim].start();
    }

    // Every accepted message reaches a phone.
    let accepted = accepted.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered: HashMap<String, usize>;
    loop {
        delivered = HashMap::new();
        for line in cluster.sim_lines() {
            if let Some(t) = line["text"].as_str() {
                *delivered.entry(t.to_owned()).or_default() += 1;
            }
        }
        let missing: Vec<&String> = accepted
            .keys()
            .filter(|t| !delivered.contains_key(*t))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} accepted message(s) never reached a simulator, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let duplicates: usize = delivered
        .iter()
        .filter(|(t, _)| accepted.contains_key(*t))
        .map(|(_, n)| n - 1)
        .sum();
    // Only a send in flight can reach the phone twice: one on the wire, and with the next
    // message written as soon as the modem answers, at most the one before it whose answer
    // was not recorded yet; both are the killed node's `sending` rows at the kill.
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, but only {in_flight} sends were in flight at the {ROUNDS} kills"
    );
    let lease = Duration::from_secs(LEASE_SECS);
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "failover: {} accepted, all delivered, {duplicates} duplicate(s) over {ROUNDS} kills \
         with {in_flight} sends in flight; takeover of claimed messages {:?} (lease {lease:?})",
        accepted.len(),
        takeovers
    );
    // The lease (counted from the last renewal, so up to a third of it less), one send, and
    // scheduling slack on a busy machine and a busy database.
    assert!(
        slowest <= lease + Duration::from_secs(2),
        "a takeover took {slowest:?} with a {lease:?} lease"
    );
}

#[test]
fn otp_verification_holds_across_two_nodes() {
    const GUESSES: usize = 10_000;
    const THREADS: usize = 8;
    const MAX_ATTEMPTS: u64 = 5;
    let Some(cluster) = Cluster::start(
        2,
        "otp_per_number = \"off\"\nverify_per_number = \"off\"",
        &[],
        &[],
    ) else {
        return;
    };
    let bases: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.serve().base.clone())
        .collect();
    let text_for = |to: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = cluster.sim_lines().iter().rev().find(|l| l["to"] == to) {
                return l["text"].as_str().expect("text").to_owned();
            }
            assert!(Instant::now() < deadline, "no text for {to}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // 10,000 wrong guesses, alternating between the nodes, eight at a time.
    let to = "+447700900123";
    let created = post(&bases[0], "/v1/otp", &json!({ "to": to })).expect("node-a");
    assert_eq!(
        created.status,
        202,
        "{created:?}\n{}",
        cluster.nodes[0].serve().log_tail(20)
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    let real = code_in(&text_for(to));
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, bases, id, real) = (next.clone(), bases.clone(), id.clone(), real.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= GUESSES {
                        return answers;
                    }
                    let mut guess = format!("{i:06}");
                    if guess == real {
                        guess = format!("{:06}", GUESSES + i);
                    }
                    let a = post(
                        &bases[i % 2],
                        &format!("/v1/otp/{id}/verify"),
                        &json!({ "code": guess }),
                    )
                    .expect("node reachable");
                    answers.push((a.status, a.body));
                }
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("guesser"))
        .collect();
    let mut counted = 0;
    for (status, body) in &answers {
        assert!(*status < 500, "a guess answered {status}: {body}");
        assert_ne!(body["verified"], true, "a wrong code verified: {body}");
        if *status == 200 && body["attempts_remaining"].as_u64().is_some_and(|n| n > 0) {
            counted += 1;
        }
    }
    assert_eq!(
        counted,
        (MAX_ATTEMPTS - 1) as usize,
        "answers that still left attempts, over two nodes"
    );
    for base in &bases {
        let otp = get(base, &format!("/v1/otp/{id}"));
        assert_eq!(otp.body["status"], "max_attempts_reached", "{otp:?}");
        assert_eq!(otp.body["attempts_remaining"], 0, "{otp:?}");
    }
    eprintln!("cluster: {GUESSES} wrong guesses over two nodes counted exactly {MAX_ATTEMPTS}");

    // Eight concurrent right codes, four per node: exactly one approval.
    let to = "+447700900124";
    let created = post(&bases[1], "/v1/otp", &json!({ "to": to })).expect("node-b");
    assert_eq!(created.status, 202, "{created:?}");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let real = code_in(&text_for(to));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (barrier, base, id, real) = (
                barrier.clone(),
                bases[i % 2].clone(),
                id.clone(),
                real.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                post(
                    &base,
                    &format!("/v1/otp/{id}/verify"),
                    &json!({ "code": real }),
                )
                .expect("node reachable")
            })
        })
        .collect();
    let approvals = threads
        .into_iter()
        .map(|t| t.join().expect("verifier"))
        .filter(|a| a.status == 200 && a.body["verified"] == true)
        .count();
    assert_eq!(approvals, 1, "eight right codes over two nodes");
}

#[test]
fn the_per_number_limit_holds_across_nodes() {
    let Some(cluster) = Cluster::start(2, "otp_per_number = \"3/10m\"", &[], &[]) else {
        return;
    };
    let bases: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.serve().base.clone())
        .collect();
    // Each new OTP supersedes the last; the budget is the number's, whichever node is asked.
    let to = "+447700900555";
    let mut answers = Vec::new();
    for i in 0..6 {
        let a = post(
            &bases[i % 2],
            "/v1/otp",
            &json!({ "to": to, "on_pending": "supersede" }),
        )
        .expect("node reachable");
        answers.push(a.status);
        if a.status == 429 {
            assert!(a.retry_after.is_some(), "429 without Retry-After: {a:?}");
            assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
        }
    }
    assert_eq!(
        answers,
        [202, 202, 202, 429, 429, 429],
        "3/10m for one number over two nodes"
    );
}

#[test]
fn a_node_without_a_ready_modem_hands_its_messages_to_another_at_once() {
    // node-a's modem never answers: everything posted to it is sent by node-b, woken by
    // NOTIFY at node-a's commit.
    let Some(cluster) = Cluster::start(
        2,
        "otp_per_number = \"off\"",
        &[],
        &[Some("/dev/simgate-test-no-such-modem"), None],
    ) else {
        return;
    };
    let a = cluster.nodes[0].serve();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let text = format!("handed over {i}");
        let started = Instant::now();
        let r = post(
            &a.base,
            "/v1/messages",
            &json!({ "to": "+447700900777", "text": text }),
        )
        .expect("node-a");
        assert_eq!(r.status, 202, "{r:?}");
        loop {
            if cluster.nodes[1]
                .sim
                .log_lines()
                .iter()
                .any(|l| l["text"] == text.as_str())
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node-b never sent what node-a accepted; node-b's log:\n{}",
                cluster.nodes[1].serve().log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "cross-node hand-over: p50 {p50:?}, max {:?}",
        latencies.last().unwrap()
    );
    // A poll would show as its period; NOTIFY is a commit away. Generous for a busy machine.
    assert!(p50 < Duration::from_millis(500), "hand-over p50 {p50:?}");
}

#[test]
fn modems_and_readiness_answer_for_the_cluster() {
    let Some(mut cluster) = Cluster::start(2, "otp_per_number = \"off\"", &[], &[]) else {
        return;
    };
    let a = cluster.nodes[0].serve().base.clone();
    // Both nodes' modems, each with its node, as soon as node-b has published (every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let modems = get(&a, "/v1/modems").body;
        // Published every second: node-b's first publication may predate its modem's ready.
        let nodes: HashSet<String> = modems["modems"]
            .as_array()
            .expect("modems")
            .iter()
            .filter(|m| m["state"] == "ready")
            .filter_map(|m| m["node"].as_str().map(str::to_owned))
            .collect();
        if nodes.len() == 2 {
            assert!(
                nodes.contains("node-a") && nodes.contains("node-b"),
                "{modems}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-a never listed node-b's modem: {modems}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = get(&a, "/readyz");
    assert_eq!(ready.status, 200, "{ready:?}");
    assert!(
        ready.body["modems_ready"].as_array().is_some_and(|m| m
            .iter()
            .any(|id| id.as_str().is_some_and(|s| s.starts_with("node-b/")))),
        "{ready:?}"
    );

    // A dead node's modems leave the list once its lease lapses.
    cluster.nodes[1].kill();
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS + 10);
    loop {
        let modems = get(&a, "/v1/modems").body;
        let listed_b = modems["modems"]
            .as_array()
            .expect("modems")
            .iter()
            .any(|m| m["node"] == "node-b");
        if !listed_b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dead node's modem is still listed: {modems}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
