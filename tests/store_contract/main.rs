//! One behavioural suite for both store back ends: every scenario runs against a SQLite file
//! and against a real PostgreSQL database (a throwaway cluster shared by this binary, one fresh
//! database per scenario), so neither back end can drift from the interface's promises.
//!
//! A scenario is written once with [`contract!`]; it expands to a module with a `sqlite` and a
//! `postgres` test. The PostgreSQL half skips with a printed reason when the server binaries
//! are absent (tests/support/pg.rs).

#[path = "../support/pg.rs"]
mod pg;

mod events;
mod inbound;
mod messages;
mod otps;
mod queue;
mod tls;

use simgate::store::{PgOptions, Store, StoreOptions};

/// Keeps a scenario's SQLite directory alive while it runs.
pub enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    None,
}

pub fn sqlite() -> (Store, Guard) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&dir.path().join("simgate.db"), StoreOptions::default())
        .expect("open SQLite store");
    (store, Guard::Dir(dir))
}

/// A store on a fresh database of the shared cluster, as node `node-a`; `None` (and a printed
/// reason) without PostgreSQL.
pub async fn postgres() -> Option<(Store, Guard)> {
    let url = pg::shared()?.create_database();
    Some((postgres_node(&url, "node-a").await, Guard::None))
}

/// Another node's store on the same database.
pub async fn postgres_node(url: &str, node: &str) -> Store {
    Store::connect_postgres(PgOptions::new(url, node))
        .await
        .expect("connect PostgreSQL store")
}

/// Writes each scenario once for both back ends:
///
/// ```ignore
/// contract! {
///     async fn a_name(store: Store) { ... }
/// }
/// ```
#[macro_export]
macro_rules! contract {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident($store:ident: Store) $body:block
    )*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($store: simgate::store::Store) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _guard) = $crate::sqlite();
                scenario(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some((store, _guard)) = $crate::postgres().await else {
                    return;
                };
                scenario(store).await;
            }
        }
    )*};
}
