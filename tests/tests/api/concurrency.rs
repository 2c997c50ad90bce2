//! No missed change under concurrency: many writers and cursor-following readers at once; every
//! pull any reader made holds exactly the objects acknowledged pushes changed between its cursor
//! and its `now` (see [`History::check`]), readers received changes while writers ran, and every
//! push got a unique `now`. With authentication on, each writer is a user of their own, with the same ids
//! as the others, and every reader follows every user's partition: none ever receives an object
//! of another. `SYNC_STRESS_SECS` sets how long writers run (default 5 s).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::helpers::stress::{self, History, Pull};
use crate::helpers::{Api, Backend, TestServer, backend_tests};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const WRITERS: usize = 8;
const READERS: usize = 6;
const IDS: usize = 300;
/// Writers write until they have acknowledged this many pushes in all, however slow the machine.
const MIN_PUSHES: usize = 200;
const PATH: &str = "/stressChanges";

/// One acknowledged change of a writer's user.
type Acked = stress::Acked<usize>;

/// The users the writers act as: one each with authentication on, all the same one without.
fn users(backend: Backend) -> usize {
    if backend.auth { WRITERS } else { 1 }
}

/// The API of user `u` of a server.
fn api_of(server: &TestServer, u: usize) -> Api {
    server.endpoint().as_user(&format!("user{u}")).api()
}

async fn writer(api: Api, n: usize, user: usize, stop: Arc<AtomicBool>, pushes: Arc<AtomicUsize>) -> (Vec<i64>, Acked) {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let mut nows = Vec::new();
    let mut acked = Acked::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let size = rng.random_range(0..=6);
        let mut items = Vec::new();
        let mut ids = HashSet::new();
        for _ in 0..size {
            let id = format!("o{}", rng.random_range(0..IDS));
            if !ids.insert(id.clone()) {
                continue;
            }
            seq += 1;
            if rng.random_bool(0.1) {
                items.push((id, None));
            } else {
                items.push((id, Some(format!("w{n}-{seq}"))));
            }
        }
        let body: Vec<Value> = items
            .iter()
            .map(|(id, v)| match v {
                Some(v) => json!({"id": id, "v": v}),
                None => json!({"id": id, "_removed": true}),
            })
            .collect();
        let now = api.push(PATH, Value::Array(body)).await;
        nows.push(now);
        pushes.fetch_add(1, Ordering::Relaxed);
        acked.extend(items.into_iter().map(|(id, value)| (user, now, id, value)));
    }
    (nows, acked)
}

/// Follows one cursor per user (`apis[u]` acts as user `u`) until `writers_done`, then catches up
/// once more; returns every pull it made. `stop` says whether the writers are still writing.
async fn reader(apis: Vec<Api>, stop: Arc<AtomicBool>, writers_done: Arc<AtomicBool>) -> Vec<Pull<usize>> {
    let users = apis.len();
    let mut log = Vec::new();
    let mut cursors = vec![0; users];
    let mut done = false;
    loop {
        // One more pull after the writers are done, so the reader catches up.
        if writers_done.load(Ordering::SeqCst) {
            done = true;
        }
        for (user, api) in apis.iter().enumerate() {
            let since = cursors[user];
            let during_writes = !stop.load(Ordering::SeqCst);
            let pulled = api.pull(PATH, since).await;
            assert!(pulled.now >= since, "now went backwards: {} after {since}", pulled.now);
            let mut updates = Vec::with_capacity(pulled.updates.len());
            for u in &pulled.updates {
                let stamp = u["_lastChange"].as_i64().unwrap();
                assert!(stamp > since && stamp <= pulled.now, "{stamp} outside ({since}, {}]", pulled.now);
                let value = if u["_removed"] == true { None } else { Some(u["v"].as_str().unwrap().to_owned()) };
                if let Some(value) = &value {
                    let writer: usize = value[1..].split('-').next().and_then(|n| n.parse().ok()).unwrap();
                    assert_eq!(writer % users, user, "user {user} received {value}, written by another user");
                }
                updates.push((u["id"].as_str().unwrap().to_owned(), stamp, value));
            }
            let more = pulled.more == Some(true);
            log.push(Pull { partition: user, since, now: pulled.now, more, paged: false, during_writes, updates });
            cursors[user] = pulled.now;
        }
        if done {
            return log;
        }
    }
}

async fn cursor_following_readers_never_miss_a_change_under_concurrent_writers(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let users = users(backend);
    let stop = Arc::new(AtomicBool::new(false));
    let pushes = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(api_of(&server, n % users), n, n % users, stop.clone(), pushes.clone())))
        .collect();
    // Readers stop only after every writer has been joined, so their last pull comes after the
    // last acknowledged push.
    let writers_done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let apis = (0..users).map(|u| api_of(&server, u)).collect();
            tokio::spawn(reader(apis, stop.clone(), writers_done.clone()))
        })
        .collect();

    let started = Instant::now();
    stress::let_writers_run(&pushes, MIN_PUSHES).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all_nows, mut acked) = (Vec::new(), Acked::new());
    for (n, w) in writers.into_iter().enumerate() {
        let (nows, changes) = w.await.unwrap();
        all_nows.extend(nows.into_iter().map(|now| (n % users, now)));
        acked.extend(changes);
    }
    writers_done.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for r in readers {
        logs.push(r.await.unwrap());
    }
    let elapsed = started.elapsed();

    // Partitions have clocks of their own; within one, every push has its own now.
    let unique: HashSet<_> = all_nows.iter().collect();
    assert_eq!(unique.len(), all_nows.len(), "two pushes to one partition got the same now");
    let history = History::replay(acked);
    history.check_logs(&logs, 10);
    let expected = history.final_state();
    for (r, log) in logs.iter().enumerate() {
        assert_eq!(stress::received(log), expected, "reader {r} ends in another state");
    }
    eprintln!(
        "{} pushes by {users} users, {} objects, {READERS} readers agree, in {elapsed:?}",
        all_nows.len(),
        expected.len()
    );
    server.stop().await;
}

backend_tests!(multi_thread: cursor_following_readers_never_miss_a_change_under_concurrent_writers);
