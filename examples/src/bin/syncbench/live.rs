//! W9, long-poll: how soon a pull waiting on one instance is answered after a push to another
//! (PostgreSQL `NOTIFY`; for SQLite, a second process finding the commit in the file), against a
//! pull waiting on the instance that takes the push, in the same run; and how many waiting pulls
//! one instance holds per MiB of resident memory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::server::Server;
use crate::stats::{ms, percentile};

/// How many pulls wait at once for the memory figure.
const PARKED: usize = 2_000;

/// `sync_long_polls_waiting` of `server`.
async fn waiting(client: &reqwest::Client, server: &Server) -> anyhow::Result<usize> {
    let text = client.get(format!("{}/metrics", server.base_url)).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("sync_long_polls_waiting "))
        .and_then(|n| n.trim().parse().ok())
        .context("the server reports no sync_long_polls_waiting")
}

async fn until_waiting(client: &reqwest::Client, server: &Server, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    while waiting(client, server).await? != n {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{n} pulls never waited on {}", server.base_url);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn push(client: &reqwest::Client, server: &Server, path: &str, id: usize) -> anyhow::Result<i64> {
    let answer: serde_json::Value = client
        .post(format!("{}{path}", server.base_url))
        .header("Content-Type", "application/json")
        .body(format!(r#"[{{"id":"o{id}","n":{id}}}]"#))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["now"].as_i64().context("a push answer without now")
}

/// The time from sending a push to `pushed_to` until a pull waiting on `waiting_on` is answered,
/// over `rounds` rounds.
async fn wake_ups(
    client: &reqwest::Client,
    pushed_to: &Server,
    waiting_on: &Server,
    path: &str,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut since = push(client, pushed_to, path, 0).await?;
    let mut took = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let pull = client.get(format!("{}{path}?since={since}&wait=30", waiting_on.base_url)).send();
        let pull = tokio::spawn(pull);
        until_waiting(client, waiting_on, 1).await?;
        let started = Instant::now();
        let now = push(client, pushed_to, path, round).await?;
        let answer: serde_json::Value = pull.await??.error_for_status()?.json().await?;
        took.push(started.elapsed());
        if answer["updates"].as_array().is_none_or(Vec::is_empty) {
            bail!("a woken pull answered no update: {answer}");
        }
        since = now;
    }
    Ok(took)
}

/// Runs W9 over two servers sharing one store.
pub async fn w9(first: &Server, second: &Server, tag: &str, runs: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(PARKED + 16).build()?;
    let rounds = (40 * runs).max(100);
    let path = format!("/b{tag}W9Changes");
    let same = wake_ups(&client, first, first, &path, rounds).await?;
    let across = wake_ups(&client, first, second, &path, rounds).await?;
    for (name, took) in [("same instance", &same), ("another instance", &across)] {
        println!(
            "W9 long-poll woken by a push, {name:<17} p50 {:>9}   p99 {:>9}   ({rounds} wake-ups)",
            ms(percentile(took, 0.5)),
            ms(percentile(took, 0.99)),
        );
    }
    println!(
        "W9 long-poll across/same instance, p50 {:.2}",
        percentile(&across, 0.5).as_secs_f64() / percentile(&same, 0.5).as_secs_f64().max(1e-9)
    );

    let before = second.rss_mb().context("the server's memory cannot be read")?;
    let mut pulls = Vec::with_capacity(PARKED);
    for i in 0..PARKED {
        // Each in a scope of its own: the most a wait can cost.
        let url = format!("{}/b{tag}W9p{i}Changes?since=0&wait=20", second.base_url);
        pulls.push(tokio::spawn(client.get(url).send()));
    }
    until_waiting(&client, second, PARKED).await?;
    let after = second.rss_mb().context("the server's memory cannot be read")?;
    let per_mib = PARKED as f64 / (after - before).max(1.0 / 1024.0);
    println!(
        "W9 {PARKED} waiting pulls: resident memory {before:.1} -> {after:.1} MiB, {per_mib:.0} waiting pulls per MiB"
    );
    for pull in pulls {
        pull.await??.error_for_status()?;
    }
    Ok(())
}
