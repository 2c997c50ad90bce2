//! `backoffice`: another system writing into the sync server, so that data flows both ways (the
//! apps' changes reach it through webhooks; its changes reach the apps through the server). It
//! pushes the objects of a JSON-lines file (one object with an `id` per line) in batches, each
//! with an `Idempotency-Key` made from its content: running it again, or retrying after a lost
//! answer, applies nothing twice.
//!
//! Usage: `backoffice --url http://127.0.0.1:8080 --entity Product --user backoffice
//! --password ... products.jsonl` (Basic credentials of an `[[auth.basic]]` user, or `--token`).

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(about = "Pushes the objects of a JSON-lines file to the sync server, idempotently")]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The entity (its path is /<entity>Changes with a lower-case first letter).
    #[arg(long)]
    entity: String,
    /// A Basic user of the server.
    #[arg(long, env = "BACKOFFICE_USER")]
    user: Option<String>,
    /// Its password.
    #[arg(long, env = "BACKOFFICE_PASSWORD")]
    password: Option<String>,
    /// A bearer token instead.
    #[arg(long, env = "BACKOFFICE_TOKEN")]
    token: Option<String>,
    /// Objects per push.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The file: one JSON object with an `id` per line (`"_removed": true` removes it).
    file: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file))?;
    let mut objects = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let object: Value = serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 1))?;
        if !object["id"].is_string() {
            bail!("line {}: an object needs a string id", n + 1);
        }
        objects.push(object);
    }
    let mut path = args.entity.clone();
    path[..1].make_ascii_lowercase();
    let url = format!("{}/{path}Changes", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let (mut applied, mut replayed) = (0, 0);
    for batch in objects.chunks(args.batch.max(1)) {
        let body = serde_json::to_vec(batch)?;
        let key = format!("backoffice-{}", hex::encode(&Sha256::digest(&body)[..16]));
        let mut request =
            client.post(&url).header("Content-Type", "application/json").header("Idempotency-Key", &key).body(body);
        request = match (&args.token, &args.user) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some(user)) => request.basic_auth(user, args.password.as_deref()),
            (None, None) => request,
        };
        let answer = request.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = answer.status();
        let was_replayed = answer.headers().contains_key("idempotency-replayed");
        let text = answer.text().await?;
        if !status.is_success() {
            bail!("the server answered {status}: {text}");
        }
        if was_replayed {
            replayed += batch.len();
        } else {
            applied += batch.len();
        }
    }
    println!("{} objects to {url}: {applied} applied, {replayed} already applied before", objects.len());
    Ok(())
}
