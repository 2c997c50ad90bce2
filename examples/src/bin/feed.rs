//! `feed`: the `Feed` entity of persistence.js's documentation, kept in a local SQLite file and
//! synced through `/feedChanges`. Usage: `feed [SERVER_URL] [DB_FILE]`
//! (defaults: `http://127.0.0.1:8080`, `feed.db`).

use serde_json::json;
use sync_client::{Conflict, Entity, FieldType, HttpTransport, Order, Query, Resolution, Store, Syncer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let db = args.next().unwrap_or_else(|| "feed.db".into());

    // Declare the entity; its table is created (or gains new columns) on open.
    let feed = Entity::new("Feed")
        .field("nome", FieldType::Text)
        .field("conteudo", FieldType::Text)
        .field("url", FieldType::Text)
        .field("favoritado", FieldType::Bool);
    let store = Store::open(&db, [feed])?;

    // Conflicts: edits to different fields on two devices merge by themselves; the handler
    // decides fields changed on both sides. A favourite stays a favourite; the server wins the rest.
    let keep_favourites = |c: &Conflict| match &c.remote {
        Some(remote) if c.fields.iter().any(|f| f == "favoritado") => {
            let mut merged = remote.clone();
            merged.insert("favoritado".into(), json!(true));
            Resolution::Merged(merged)
        }
        _ => Resolution::TakeRemote,
    };
    let syncer = Syncer::new(store.clone(), HttpTransport::new(&server)?);
    let sync = || match syncer.sync_all(&keep_favourites) {
        Ok(r) => println!("pulled {}, pushed {}, {} conflicts", r.pulled(), r.pushed(), r.conflicts()),
        Err(e) => eprintln!("working offline: {:#}", anyhow::Error::from(e)),
    };
    // Pull first, so that a feed another device added is not added twice.
    sync();

    // Local writes work offline; each one is tracked for the next sync.
    let url = "https://blog.rust-lang.org/feed.xml";
    if store.query(&Query::new("Feed").filter("url", url))?.is_empty() {
        let id = store.insert("Feed", json!({"nome": "Rust Blog", "conteudo": "Announcements", "url": url}))?;
        store.update("Feed", &id, json!({"favoritado": true}))?;
    }
    sync();

    // Queries: filter, order, limit.
    for feed in store.query(&Query::new("Feed").filter("favoritado", true).order_by("nome", Order::Asc).limit(20))? {
        println!("{}\t{}", feed.get_str("nome").unwrap_or_default(), feed.get_str("url").unwrap_or_default());
    }
    Ok(())
}
