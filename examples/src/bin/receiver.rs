//! `receiver`: a system that receives the server's webhooks and keeps its own copy of the data,
//! as an ERP or a search index would. It checks each request's signature, and applies each event
//! once: the event's id goes into a `processed_events` table in the same transaction as its
//! effect, so a repeated delivery (at-least-once) changes nothing.
//!
//! Usage: `receiver --bind 127.0.0.1:9000 --db receiver.db --secret whsec_...` (the secret of the
//! `[[webhook]]`, also from `RECEIVER_SECRET`; give `--secret` twice while rotating). `GET
//! /objects` lists what it holds.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::Parser;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use sync_client::webhook::{self, DEFAULT_TOLERANCE_SECS};

#[derive(Parser)]
#[command(about = "Receives the sync server's webhooks into a SQLite database, each event once")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: String,
    /// The database file.
    #[arg(long, default_value = "receiver.db")]
    db: String,
    /// The webhook's signing secret(s).
    #[arg(long = "secret", env = "RECEIVER_SECRET", required = true)]
    secrets: Vec<String>,
}

struct Receiver {
    db: Mutex<Connection>,
    secrets: Vec<String>,
}

/// Applies one event unless it was processed before; returns whether it was applied.
fn apply(tx: &rusqlite::Transaction<'_>, event: &Value) -> rusqlite::Result<bool> {
    let first_time =
        tx.execute("INSERT OR IGNORE INTO processed_events (event_id) VALUES (?1)", params![event["id"].as_str()])?;
    if first_time == 0 {
        return Ok(false);
    }
    let key = (event["entity"].as_str(), event["partition"].as_str(), event["object_id"].as_str());
    let last_change = event["lastChange"].as_i64();
    // Events of one object arrive in order; a redelivered older one never undoes a newer one.
    let newer: Option<i64> = tx
        .query_row(
            "SELECT last_change FROM objects WHERE entity = ?1 AND partition = ?2 AND id = ?3",
            params![key.0, key.1, key.2],
            |r| r.get(0),
        )
        .optional()?;
    if newer.is_some_and(|stored| Some(stored) >= last_change) {
        return Ok(true);
    }
    let fields = (event["operation"] == "upsert").then(|| event["object"].to_string());
    tx.execute(
        "INSERT INTO objects (entity, partition, id, fields, last_change) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (entity, partition, id) DO UPDATE SET fields = excluded.fields, last_change = excluded.last_change",
        params![key.0, key.1, key.2, fields, last_change],
    )?;
    Ok(true)
}

async fn receive(req: HttpRequest, body: web::Bytes, receiver: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let secrets: Vec<&str> = receiver.secrets.iter().map(String::as_str).collect();
    let (id, timestamp, signature) =
        (header(webhook::ID_HEADER), header(webhook::TIMESTAMP_HEADER), header(webhook::SIGNATURE_HEADER));
    if let Err(e) = webhook::verify(&secrets, id, timestamp, signature, &body, now, DEFAULT_TOLERANCE_SECS) {
        eprintln!("refused {id}: {e}");
        return HttpResponse::Unauthorized().body(e.to_string());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("not JSON");
    };
    let events = match body["type"].as_str() {
        Some("batch") => body["events"].as_array().cloned().unwrap_or_default(),
        _ => vec![body],
    };
    let mut db = receiver.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let applied = db.transaction().and_then(|tx| {
        let mut applied = 0;
        for event in &events {
            applied += usize::from(apply(&tx, event)?);
        }
        tx.commit()?;
        Ok(applied)
    });
    match applied {
        Ok(applied) => {
            println!(
                "{id}: {} event(s), {applied} applied, {} already processed",
                events.len(),
                events.len() - applied
            );
            HttpResponse::NoContent().finish()
        }
        // Not applied: a 5xx makes the server try again later.
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

async fn objects(receiver: web::Data<Receiver>) -> HttpResponse {
    let db = receiver.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let listed = db
        .prepare("SELECT entity, partition, id, fields, last_change FROM objects ORDER BY entity, partition, id")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                let fields: Option<String> = r.get(3)?;
                Ok(json!({
                    "entity": r.get::<_, String>(0)?,
                    "partition": r.get::<_, String>(1)?,
                    "id": r.get::<_, String>(2)?,
                    "fields": fields.and_then(|f| serde_json::from_str::<Value>(&f).ok()),
                    "lastChange": r.get::<_, i64>(4)?,
                }))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        });
    let processed: rusqlite::Result<i64> = db.query_row("SELECT count(*) FROM processed_events", [], |r| r.get(0));
    match (listed, processed) {
        (Ok(listed), Ok(processed)) => {
            HttpResponse::Ok().json(json!({"objects": listed, "processed_events": processed}))
        }
        (Err(e), _) | (_, Err(e)) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = Connection::open(&args.db)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS processed_events (event_id TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS objects (
             entity TEXT NOT NULL, partition TEXT NOT NULL, id TEXT NOT NULL,
             fields TEXT,            -- NULL once removed
             last_change INTEGER NOT NULL,
             PRIMARY KEY (entity, partition, id));",
    )?;
    let receiver = web::Data::new(Receiver { db: Mutex::new(db), secrets: args.secrets });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(receiver.clone())
            .route("/objects", web::get().to(objects))
            .default_service(web::post().to(receive))
    })
    .workers(1)
    .bind(&args.bind)?;
    for addr in server.addrs() {
        println!("receiving on http://{addr}");
    }
    server.run().await?;
    Ok(())
}
