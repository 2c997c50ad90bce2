//! What the README and `docs/PROTOCOL.md` say is checked against the product: the configuration
//! block against the real defaults, the metrics table against `/metrics`, the error table against
//! the error codes, and the Rust snippets against the compiled examples. A change to either side
//! that is not made to the other fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use sync_proto::ErrorCode;
use sync_server::Config;
use sync_server::store::PostgresOptions;

use crate::helpers::TestServer;

const README: &str = include_str!("../../../README.md");
const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

/// The body of the first fenced block after the line `<!-- marker -->`.
pub fn marked_block<'a>(doc: &'a str, marker: &str) -> &'a str {
    let tag = format!("<!-- {marker} -->");
    let after = &doc[doc.find(&tag).unwrap_or_else(|| panic!("{tag} is missing")) + tag.len()..];
    let open = after.find("```").expect("a fenced block follows the marker");
    let body = &after[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    &body[..body.find("\n```").expect("the block is closed") + 1]
}

/// The rows of the first Markdown table after `<!-- marker -->` (or after `heading`), as cells.
fn table_rows<'a>(doc: &'a str, start: &str) -> Vec<Vec<&'a str>> {
    let after = &doc[doc.find(start).unwrap_or_else(|| panic!("{start} is missing"))..];
    after
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the separator
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// The backticked words of a cell, leaving out those in parentheses (examples of values).
fn backticked(cell: &str) -> Vec<&str> {
    let mut depth = 0;
    let mut words = Vec::new();
    let mut rest = cell;
    while let Some(i) = rest.find(['(', ')', '`']) {
        match rest.as_bytes()[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {
                let end = rest[i + 1..].find('`').expect("closed backtick") + i + 1;
                if depth == 0 {
                    words.push(&rest[i + 1..end]);
                }
                rest = &rest[end + 1..];
                continue;
            }
        }
        rest = &rest[i + 1..];
    }
    words
}

/// The keys of a TOML table, and of its sub-tables as `table.key`.
fn keys(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(table) = value {
        for (key, value) in table {
            let name = format!("{prefix}{key}");
            keys(value, &format!("{name}."), out);
            out.insert(name);
        }
    }
}

#[test]
fn the_documented_configuration_is_every_key_with_its_real_default() {
    let block = marked_block(README, "config: defaults");
    let documented: Config = toml::from_str(block).expect("the README's block is a valid configuration");
    assert_eq!(documented, Config::default(), "a default in the README differs from the server's");

    let mut shown = BTreeSet::new();
    keys(&toml::Value::Table(toml::from_str(block).unwrap()), "", &mut shown);
    let mut real = BTreeSet::new();
    keys(&toml::Value::try_from(Config::default()).unwrap(), "", &mut real);
    // Declared entities, users, subscriptions and hooks have blocks of their own, with examples.
    for key in ["entity", "auth.basic", "admin.users", "webhook", "amqp", "validation"] {
        real.remove(key);
    }
    assert_eq!(shown, real, "the README's block must list every key of the configuration");
}

#[test]
fn the_documented_postgres_settings_are_the_real_defaults() {
    let rows = table_rows(README, "### Configuration: the `[postgres]` section");
    let real = toml::Value::try_from(PostgresOptions::default()).unwrap();
    let real = real.as_table().unwrap();
    let documented: BTreeMap<&str, &str> = rows.iter().map(|r| (backticked(r[0])[0], r[1])).collect();
    assert_eq!(documented.len(), real.len(), "every [postgres] key is in the table: {documented:?}");
    for (key, value) in real {
        assert_eq!(documented.get(key.as_str()), Some(&value.to_string().as_str()), "[postgres] {key}");
    }
}

#[test]
fn every_error_code_is_documented_with_its_status() {
    // Listed by an exhaustive match, so that a new code fails to compile here until it is added.
    let every = |code: ErrorCode| match code {
        ErrorCode::MalformedJson
        | ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::TooManyAttempts
        | ErrorCode::InvalidBody
        | ErrorCode::InvalidQuery
        | ErrorCode::ForbiddenOrigin
        | ErrorCode::UnknownEntity
        | ErrorCode::NotFound
        | ErrorCode::Rejected
        | ErrorCode::MethodNotAllowed
        | ErrorCode::RequestTimeout
        | ErrorCode::IncompleteBody
        | ErrorCode::BodyTooLarge
        | ErrorCode::TooManyItems
        | ErrorCode::InvalidHeader
        | ErrorCode::InvalidPath
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::Conflict
        | ErrorCode::Unavailable
        | ErrorCode::Internal => code,
    };
    let all: BTreeSet<String> = [
        ErrorCode::MalformedJson,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TooManyAttempts,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidQuery,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::UnknownEntity,
        ErrorCode::NotFound,
        ErrorCode::Rejected,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::IncompleteBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::TooManyItems,
        ErrorCode::InvalidHeader,
        ErrorCode::InvalidPath,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ]
    .into_iter()
    .map(|c| serde_json::to_value(every(c)).unwrap().as_str().unwrap().to_owned())
    .collect();

    let mut documented = BTreeSet::new();
    for row in table_rows(PROTOCOL, "## Errors") {
        let (status, code) = (row[0].parse::<u16>().expect("a status"), backticked(row[1])[0]);
        let parsed: ErrorCode = serde_json::from_value(json!(code)).unwrap_or_else(|_| panic!("{code} is no code"));
        assert_eq!(parsed.http_status(), status, "docs/PROTOCOL.md gives {code} the status {status}");
        let retry = row.get(3).copied();
        assert_eq!(retry == Some("yes"), parsed.is_retryable(), "{code}: the retry column");
        documented.insert(code.to_owned());
    }
    assert_eq!(documented, all, "docs/PROTOCOL.md must list every error code");
}

#[test]
fn the_readme_feed_snippet_is_the_compiled_example() {
    let example = include_str!("../../../examples/src/bin/feed.rs");
    assert_eq!(marked_block(README, "include: examples/src/bin/feed.rs"), example);
}

#[test]
fn the_readme_tasks_snippet_is_the_compiled_example() {
    let example = include_str!("../../../examples/src/bin/tasks.rs");
    assert_eq!(marked_block(README, "include: examples/src/bin/tasks.rs"), example);
}

#[tokio::test]
async fn every_documented_metric_is_served_with_its_labels() {
    // A subscription, so that the outbox series exist (nothing listens at its port).
    let webhook: sync_server::outbox::WebhookConfig = toml::from_str(
        r#"name = "erp"
        url = "http://127.0.0.1:9/hooks"
        secrets = ["whsec_c2VjcmV0"]"#,
    )
    .unwrap();
    let config = sync_server::Config { webhooks: vec![webhook], ..sync_server::Config::default() };
    let server = TestServer::start_with_on(config, crate::helpers::Backend::SQLITE).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a"}])).await;
    api.pull("/taskChanges", 0).await;
    let (status, text) = {
        let resp = reqwest::get(format!("{}/metrics", server.base_url)).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(status, 200);

    let mut documented = BTreeSet::new();
    for row in table_rows(README, "<!-- metrics -->") {
        let (name, kind) = (backticked(row[0])[0], row[1]);
        documented.insert(name.to_owned());
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} is not a {kind} in\n{text}");
        let sample = if kind == "histogram" { format!("{name}_count") } else { name.to_owned() };
        let series: Vec<&str> = text.lines().filter(|l| l.split(['{', ' ']).next() == Some(sample.as_str())).collect();
        assert!(!series.is_empty(), "no series of {name} in\n{text}");
        let labels: BTreeSet<&str> = backticked(row[2]).into_iter().collect();
        for line in &series {
            let served: BTreeSet<&str> = line
                .split_once('{')
                .map(|(_, rest)| {
                    rest.split('}').next().unwrap().split(',').filter_map(|l| l.split('=').next()).collect()
                })
                .unwrap_or_default();
            assert_eq!(served, labels, "the labels of {line}");
        }
        // Values listed in the table (`applied`, `replayed`, ...) exist from the start.
        for value in row[2].split('(').skip(1).flat_map(|v| backticked(v.split(')').next().unwrap())) {
            assert!(series.iter().any(|l| l.contains(&format!("=\"{value}\""))), "{name} has no {value} series");
        }
    }
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(served, documented, "every metric the server serves is in the README's table");
    server.stop().await;
}
