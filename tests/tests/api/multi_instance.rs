//! Several instances over one database: three server processes (the shipped binary) share one
//! store, and writers and cursor-following readers send each request to a randomly chosen
//! instance. Every pull any reader made holds exactly the objects acknowledged pushes changed
//! between its cursor and its `now` (see [`History::check`]), readers received changes while
//! writers ran, every push to an entity got its own `now`, and no reader's cursor ever went
//! backwards. With
//! PostgreSQL this is the scale-out deployment; with SQLite, processes sharing one file. With
//! authentication on, each writer is a user of their own, with the same ids as the others, and
//! every reader follows every user's partitions: none ever receives an object of another.
//! `SYNC_STRESS_SECS` sets how long writers run (default 5 s).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::helpers::stress::{self, History, Pull};
use crate::helpers::{Api, Backend, Endpoint, ServerProcess, TestDb, backend_tests};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const INSTANCES: usize = 3;
const WRITERS: usize = 6;
const READERS: usize = 4;
const IDS: usize = 150;
/// Writers write until they have acknowledged this many pushes in all, however slow the machine.
const MIN_PUSHES: usize = 200;
const ENTITIES: [&str; 2] = ["/noteChanges", "/cardChanges"];
/// Upper bounds on the loops, whatever the duration asked for.
const MAX_PUSHES_PER_WRITER: usize = 20_000;
const MAX_PULLS_PER_READER: usize = 200_000;
/// A reader's last catch-up may take this many pages at most.
const MAX_CATCH_UP_PAGES: usize = 10_000;

/// A user and an entity: one partition.
type Partition = (usize, &'static str);
/// What pushes acknowledged, per partition.
type Acked = stress::Acked<Partition>;

/// The users the writers act as: one each with authentication on, all the same one without.
fn users(backend: Backend) -> usize {
    if backend.auth { WRITERS } else { 1 }
}

/// For each user, an API per instance.
fn apis_by_user(endpoints: &[Endpoint], users: usize) -> Vec<Vec<Api>> {
    (0..users).map(|u| endpoints.iter().map(|e| e.as_user(&format!("user{u}")).api()).collect()).collect()
}

/// Pushes 0 to 5 changes at a time to a random entity through a random instance (`apis`, as
/// `user`) until `stop`. Returns the `(partition, now)` of every push, and what they acknowledged.
async fn writer(
    apis: Vec<Api>,
    n: usize,
    user: usize,
    stop: Arc<AtomicBool>,
    pushes: Arc<AtomicUsize>,
) -> (Vec<(Partition, i64)>, Acked) {
    let mut rng = StdRng::seed_from_u64(1000 + n as u64);
    let mut nows = Vec::new();
    let mut acked = Acked::new();
    for seq in 0..MAX_PUSHES_PER_WRITER {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let entity = ENTITIES[rng.random_range(0..ENTITIES.len())];
        let api = &apis[rng.random_range(0..apis.len())];
        let mut ids = HashSet::new();
        let mut items = Vec::new();
        for _ in 0..rng.random_range(0..=5) {
            let id = format!("o{}", rng.random_range(0..IDS));
            if ids.insert(id.clone()) {
                let value = (!rng.random_bool(0.15)).then(|| format!("w{n}-{seq}"));
                items.push((id, value));
            }
        }
        let body: Vec<Value> = items
            .iter()
            .map(|(id, value)| match value {
                Some(v) => json!({"id": id, "v": v}),
                None => json!({"id": id, "_removed": true}),
            })
            .collect();
        let now = api.push(entity, Value::Array(body)).await;
        nows.push(((user, entity), now));
        pushes.fetch_add(1, Ordering::Relaxed);
        acked.extend(items.into_iter().map(|(id, value)| ((user, entity), now, id, value)));
    }
    (nows, acked)
}

/// Follows one cursor per partition (`apis[user][instance]`), each pull on a random instance,
/// some of them paged; after `writers_done`, catches up once more on every partition and returns
/// every pull it made. `stop` says whether the writers are still writing.
async fn reader(
    apis: Vec<Vec<Api>>,
    n: usize,
    stop: Arc<AtomicBool>,
    writers_done: Arc<AtomicBool>,
) -> Vec<Pull<Partition>> {
    let mut rng = StdRng::seed_from_u64(2000 + n as u64);
    let mut cursors: HashMap<Partition, i64> = HashMap::new();
    let mut log = Vec::new();
    for _ in 0..MAX_PULLS_PER_READER {
        let finishing = writers_done.load(Ordering::SeqCst);
        for partition in (0..apis.len()).flat_map(|user| ENTITIES.map(|entity| (user, entity))) {
            let mut pages = 0;
            loop {
                let instances = &apis[partition.0];
                let api = &instances[rng.random_range(0..instances.len())];
                let since = cursors.get(&partition).copied().unwrap_or(0);
                let limit = rng.random_bool(0.5).then(|| rng.random_range(1..=20));
                let during_writes = !stop.load(Ordering::SeqCst);
                let (pull, more) = pull_once(api, apis.len(), partition, since, limit, during_writes).await;
                cursors.insert(partition, pull.now);
                log.push(pull);
                pages += 1;
                // Catching up follows every page; otherwise one page per entity and round.
                if !(finishing && more) || pages == MAX_CATCH_UP_PAGES {
                    break;
                }
            }
        }
        if finishing {
            return log;
        }
    }
    panic!("reader {n} did not finish within {MAX_PULLS_PER_READER} rounds");
}

/// One pull of a partition from `since` (of `users` users in all), checked against the cursor.
/// Returns it and `more`.
async fn pull_once(
    api: &Api,
    users: usize,
    partition: Partition,
    since: i64,
    limit: Option<usize>,
    during_writes: bool,
) -> (Pull<Partition>, bool) {
    let (user, entity) = partition;
    let query = match limit {
        Some(limit) => format!("{entity}?since={since}&limit={limit}"),
        None => format!("{entity}?since={since}"),
    };
    let (status, body) = api.get(&query).await;
    assert_eq!(status, 200, "{body}");
    let pulled = crate::helpers::parse_pull(&body);
    assert!(pulled.now >= since, "{entity}: the cursor went back from {since} to {}", pulled.now);
    let mut updates = Vec::with_capacity(pulled.updates.len());
    for update in &pulled.updates {
        let last_change = update["_lastChange"].as_i64().expect("_lastChange");
        assert!(
            since < last_change && last_change <= pulled.now,
            "{entity}: {update} outside ({since}, {}]",
            pulled.now
        );
        let id = update["id"].as_str().expect("id").to_owned();
        let value = match update.get("_removed") {
            Some(_) => None,
            None => Some(update["v"].as_str().expect("v").to_owned()),
        };
        if let Some(value) = &value {
            let writer: usize = value[1..].split('-').next().and_then(|n| n.parse().ok()).expect("w<writer>-<seq>");
            assert_eq!(writer % users, user, "user {user} received {value}, written by another user");
        }
        updates.push((id, last_change, value));
    }
    let more = pulled.more == Some(true);
    let paged = limit.is_some();
    (Pull { partition, since, now: pulled.now, more, paged, during_writes, updates }, more)
}

async fn instances_never_lose_a_change_or_repeat_a_now(backend: Backend) {
    let db = TestDb::create(backend).await;
    let mut servers = Vec::new();
    for _ in 0..INSTANCES {
        servers.push(ServerProcess::spawn(&db, &[]).await);
    }
    let users = users(backend);
    let endpoints: Vec<Endpoint> = servers.iter().map(ServerProcess::endpoint).collect();
    let apis = apis_by_user(&endpoints, users);

    let stop = Arc::new(AtomicBool::new(false));
    let writers_done = Arc::new(AtomicBool::new(false));
    let pushes = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(apis[n % users].clone(), n, n % users, stop.clone(), pushes.clone())))
        .collect();
    let readers: Vec<_> =
        (0..READERS).map(|n| tokio::spawn(reader(apis.clone(), n, stop.clone(), writers_done.clone()))).collect();

    let started = Instant::now();
    stress::let_writers_run(&pushes, MIN_PUSHES).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acked::new();
    let mut pushes: HashMap<Partition, Vec<i64>> = HashMap::new();
    for w in writers {
        let (nows, changes) = w.await.expect("writer");
        for (partition, now) in nows {
            pushes.entry(partition).or_default().push(now);
        }
        acked.extend(changes);
    }
    // Every acknowledged push is committed: readers catch up from here on.
    writers_done.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for r in readers {
        logs.push(r.await.expect("reader"));
    }
    let elapsed = started.elapsed();

    for (partition, nows) in &pushes {
        let unique: HashSet<i64> = nows.iter().copied().collect();
        assert_eq!(unique.len(), nows.len(), "{partition:?}: two pushes got the same now");
    }
    let history = History::replay(acked);
    history.check_logs(&logs, 10);
    let expected = history.final_state();
    assert!(expected.len() > 50, "too little was written to test anything: {}", expected.len());
    for (r, log) in logs.iter().enumerate() {
        assert_eq!(stress::received(log), expected, "reader {r} ends in another state");
    }

    // Each instance answers the same complete state.
    for i in 0..INSTANCES {
        let mut pulls = Vec::new();
        for (user, instances) in apis.iter().enumerate() {
            for entity in ENTITIES {
                pulls.push(pull_once(&instances[i], users, (user, entity), 0, None, false).await.0);
            }
        }
        assert_eq!(stress::received(&pulls), expected, "instance {i} answers another state");
    }
    eprintln!(
        "{backend:?}: {} objects of {users} users from {} pushes over {INSTANCES} instances; {READERS} readers agree; {elapsed:?}",
        expected.len(),
        pushes.values().map(Vec::len).sum::<usize>()
    );
}

/// Many pushes at once to one entity through every instance, empty ones included: each gets its
/// own `now`, whatever instance and order they commit in.
async fn concurrent_pushes_through_every_instance_get_unique_nows(backend: Backend) {
    const TASKS: usize = 12;
    const PUSHES: usize = 40;
    let db = TestDb::create(backend).await;
    let mut servers = Vec::new();
    for _ in 0..INSTANCES {
        servers.push(ServerProcess::spawn(&db, &[]).await);
    }
    let apis: Vec<Api> = servers.iter().map(ServerProcess::api).collect();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let apis = apis.clone();
            tokio::spawn(async move {
                let mut nows = Vec::with_capacity(PUSHES);
                for i in 0..PUSHES {
                    let body = if i % 3 == 0 { json!([]) } else { json!([{"id": format!("t{t}"), "i": i}]) };
                    nows.push(apis[(t + i) % apis.len()].push("/counterChanges", body).await);
                }
                nows
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let nows = task.await.expect("pusher");
        assert!(nows.windows(2).all(|w| w[0] < w[1]), "one client's pushes are ordered: {nows:?}");
        all.extend(nows);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), TASKS * PUSHES, "two pushes got the same now");
    let last = *unique.iter().max().expect("pushes");
    for api in &apis {
        let pulled = api.pull("/counterChanges", 0).await;
        assert_eq!(pulled.now, last, "the high-water mark is the last push on every instance");
        assert_eq!(pulled.updates.len(), TASKS);
    }
}

backend_tests!(
    multi_thread: instances_never_lose_a_change_or_repeat_a_now,
    concurrent_pushes_through_every_instance_get_unique_nows
);
