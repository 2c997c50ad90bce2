//! No missed change under concurrency: many writers and cursor-following readers at once; at the
//! end every reader has seen the last acknowledged version of every object, and every push got a
//! unique `now`. With authentication on, each writer is a user of their own, with the same ids
//! as the others, and every reader follows every user's partition: none ever receives an object
//! of another. `SYNC_STRESS_SECS` sets how long writers run (default 5 s).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{Api, Backend, TestServer, backend_tests};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const WRITERS: usize = 8;
const READERS: usize = 6;
const IDS: usize = 300;
const PATH: &str = "/stressChanges";

/// One acknowledged change: the writer's user, the push's `now`, the id, and the value or `None`
/// for a removal.
type Acked = Vec<(usize, i64, String, Option<String>)>;

/// The users the writers act as: one each with authentication on, all the same one without.
fn users(backend: Backend) -> usize {
    if backend.auth { WRITERS } else { 1 }
}

/// The API of user `u` of a server.
fn api_of(server: &TestServer, u: usize) -> Api {
    server.endpoint().as_user(&format!("user{u}")).api()
}

/// The state the server must end in: acknowledged changes replayed per user in timestamp order
/// with the protocol's rules (removing an absent or already removed object changes nothing).
fn expected_state(mut acked: Acked) -> View {
    acked.sort_by_key(|(_, now, _, _)| *now);
    let mut state = View::new();
    for (user, now, id, value) in acked {
        let key = (user, id);
        let live = state.get(&key).is_some_and(|(_, v)| v.is_some());
        if value.is_some() || live {
            state.insert(key, (now, value));
        }
    }
    state
}

fn stress_duration() -> Duration {
    let secs = std::env::var("SYNC_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    Duration::from_secs(secs)
}

async fn writer(api: Api, n: usize, user: usize, stop: Arc<AtomicBool>) -> (Vec<i64>, Acked) {
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
        acked.extend(items.into_iter().map(|(id, value)| (user, now, id, value)));
    }
    (nows, acked)
}

/// A reader's view: per user and id, the last `_lastChange` and value (`None` for a tombstone).
type View = BTreeMap<(usize, String), (i64, Option<String>)>;

/// Follows one cursor per user (`apis[u]` acts as user `u`) until `stop`, then catches up once
/// more.
async fn reader(apis: Vec<Api>, stop: Arc<AtomicBool>) -> View {
    let users = apis.len();
    let mut view = View::new();
    let mut cursors = vec![0; users];
    let mut done = false;
    loop {
        // One more pull after the writers are done, so the reader catches up.
        if stop.load(Ordering::SeqCst) {
            done = true;
        }
        for (user, api) in apis.iter().enumerate() {
            let since = cursors[user];
            let pulled = api.pull(PATH, since).await;
            assert!(pulled.now >= since, "now went backwards: {} after {since}", pulled.now);
            for u in &pulled.updates {
                let stamp = u["_lastChange"].as_i64().unwrap();
                assert!(stamp > since && stamp <= pulled.now, "{stamp} outside ({since}, {}]", pulled.now);
                let value = if u["_removed"] == true { None } else { Some(u["v"].as_str().unwrap().to_owned()) };
                if let Some(value) = &value {
                    let writer: usize = value[1..].split('-').next().and_then(|n| n.parse().ok()).unwrap();
                    assert_eq!(writer % users, user, "user {user} received {value}, written by another user");
                }
                let key = (user, u["id"].as_str().unwrap().to_owned());
                if let Some((seen, _)) = view.get(&key) {
                    assert!(stamp > *seen, "{key:?}: {stamp} after {seen}");
                }
                view.insert(key, (stamp, value));
            }
            cursors[user] = pulled.now;
        }
        if done {
            return view;
        }
    }
}

async fn cursor_following_readers_never_miss_a_change_under_concurrent_writers(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let users = users(backend);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..WRITERS).map(|n| tokio::spawn(writer(api_of(&server, n % users), n, n % users, stop.clone()))).collect();
    // Readers stop only after every writer has been joined, so their last pull comes after the
    // last acknowledged push.
    let writers_done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| tokio::spawn(reader((0..users).map(|u| api_of(&server, u)).collect(), writers_done.clone())))
        .collect();

    let started = Instant::now();
    tokio::time::sleep(stress_duration()).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all_nows, mut acked) = (Vec::new(), Acked::new());
    for (n, w) in writers.into_iter().enumerate() {
        let (nows, changes) = w.await.unwrap();
        all_nows.extend(nows.into_iter().map(|now| (n % users, now)));
        acked.extend(changes);
    }
    writers_done.store(true, Ordering::SeqCst);
    let views: Vec<View> = futures_join(readers).await;
    let elapsed = started.elapsed();

    // Partitions have clocks of their own; within one, every push has its own now.
    let unique: HashSet<_> = all_nows.iter().collect();
    assert_eq!(unique.len(), all_nows.len(), "two pushes to one partition got the same now");
    assert!(all_nows.len() > 100, "only {} pushes in {elapsed:?}", all_nows.len());
    let expected = expected_state(acked);
    for (r, view) in views.iter().enumerate() {
        for (id, version) in &expected {
            let seen = view.get(id).unwrap_or_else(|| panic!("reader {r} never saw {id:?}"));
            assert_eq!(seen, version, "reader {r} missed the last version of {id:?}");
        }
        assert_eq!(view.len(), expected.len(), "reader {r} saw objects nobody acknowledged");
    }
    eprintln!(
        "{} pushes by {users} users, {} objects, {READERS} readers agree, in {elapsed:?}",
        all_nows.len(),
        expected.len()
    );
    server.stop().await;
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<View>>) -> Vec<View> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

backend_tests!(multi_thread: cursor_following_readers_never_miss_a_change_under_concurrent_writers);
