//! AMQP subscriptions against the real RabbitMQ named by `SYNC_TEST_AMQP_URL`: every change is
//! published to the exchange, persistent and confirmed, its event id as `message_id`, routed by
//! entity and operation, in order per object; a message no queue takes is retried until one is
//! bound; a broker restart loses nothing. Without the variable these tests are skipped (CI sets
//! it, and `amqp_tests_are_not_skipped_in_ci` fails there if it is missing).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use sync_server::Config;
use sync_server::outbox::{AmqpConfig, OutboxConfig};
use sync_server::store::outbox::EventFilter;

use crate::helpers::{Backend, TestServer, backend_tests};

/// The variable naming the broker the tests publish to.
pub const AMQP_URL_VAR: &str = "SYNC_TEST_AMQP_URL";

fn amqp_url(test: &str) -> Option<String> {
    crate::helpers::service_available(test, "amqp", AMQP_URL_VAR, "amqp://guest:guest@127.0.0.1:5672/%2f")
        .then(|| std::env::var(AMQP_URL_VAR).expect("set"))
}

/// A topic exchange and a durable queue of this test, deleted at the end.
struct Broker {
    channel: Channel,
    _connection: Connection,
    exchange: String,
    queue: String,
}

impl Broker {
    async fn connect(url: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("the broker answers");
        let channel = connection.create_channel().await.unwrap();
        let suffix = format!("{:016x}", rand::random::<u64>());
        let (exchange, queue) = (format!("sync-test-{suffix}"), format!("sync-test-{suffix}"));
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .unwrap();
        Self { channel, _connection: connection, exchange, queue }
    }

    async fn bind(&self, key: &str) {
        self.channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Takes messages until `done` holds for all taken so far, for at most `secs`: (routing key,
    /// message id, persistent, body).
    async fn take_until(
        &self,
        secs: u64,
        done: impl Fn(&[(String, String, bool, Value)]) -> bool,
    ) -> Vec<(String, String, bool, Value)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut taken = Vec::new();
        while !done(&taken) {
            assert!(Instant::now() < deadline, "not all messages arrived within {secs} s: {} taken", taken.len());
            match self.channel.basic_get(self.queue.as_str().into(), BasicGetOptions::default()).await.unwrap() {
                Some(message) => {
                    let d = &message.delivery;
                    let id = d.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default();
                    let persistent = *d.properties.delivery_mode() == Some(2);
                    taken.push((d.routing_key.to_string(), id, persistent, serde_json::from_slice(&d.data).unwrap()));
                    d.ack(BasicAckOptions::default()).await.unwrap();
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        taken
    }

    async fn delete(self) {
        let _ = self.channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await;
        let _ = self.channel.exchange_delete(self.exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }

    fn subscription(&self, url: &str) -> AmqpConfig {
        AmqpConfig {
            name: "bus".into(),
            url: url.into(),
            exchange: self.exchange.clone(),
            declare: true,
            entities: vec!["Task".into()],
            timeout_secs: 5.0,
            // Quick retries, then a slower minute and more: a broker restarting on a loaded
            // machine may be away for longer than the quick retries last.
            schedule_secs: vec![0.0; 1]
                .into_iter()
                .chain(std::iter::repeat_n(0.2, 50))
                .chain(std::iter::repeat_n(1.0, 120))
                .collect(),
            jitter: 0.0,
            concurrency: 8,
        }
    }
}

fn config_with(amqp: AmqpConfig) -> Config {
    Config {
        amqp: vec![amqp],
        outbox: OutboxConfig { lease_secs: 5, poll_interval_ms: 50, ..OutboxConfig::default() },
        ..Config::default()
    }
}

/// Each object's messages in commit order, and each event once.
fn assert_in_order_once(taken: &[(String, String, bool, Value)]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut ids = HashSet::new();
    for (_, id, _, body) in taken {
        if !ids.insert(id.clone()) {
            continue; // a redelivery: at least once
        }
        let (object, stamp) = (body["object_id"].as_str().unwrap().to_owned(), body["lastChange"].as_i64().unwrap());
        if let Some(before) = last.insert(object.clone(), stamp) {
            assert!(stamp > before, "{object}: {stamp} after {before}");
        }
    }
}

async fn changes_are_published_persistent_confirmed_and_in_order(backend: Backend) {
    let Some(url) = amqp_url(module_path!()) else { return };
    let broker = Broker::connect(&url).await;
    let server = TestServer::start_with_on(config_with(broker.subscription(&url)), backend).await;
    let api = server.api();

    // No queue is bound yet: the broker takes the message but routes it nowhere, so it is not
    // delivered, and is tried again.
    let first = api.push("/taskChanges", json!([{"id": "t1", "title": "early"}])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let failing = EventFilter { states: vec!["failed".into()], ..EventFilter::default() };
    let row = loop {
        if let Some(row) = server.store.events(&failing, None, 1).await.unwrap().pop() {
            break row;
        }
        assert!(Instant::now() < deadline, "the unroutable message was never retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(row.last_error.as_deref().unwrap().contains("no queue is bound"), "{row:?}");

    broker.bind("Task.*").await;
    let second = api.push("/taskChanges", json!([{"id": "t1", "done": true}, {"id": "t2"}])).await;
    let removed = api.push("/taskChanges", json!([{"id": "t2", "_removed": true}])).await;
    api.push("/noteChanges", json!([{"id": "n"}])).await; // not this subscription's entity
    let taken = broker.take_until(30, |t| t.iter().map(|m| &m.1).collect::<HashSet<_>>().len() >= 4).await;
    assert_in_order_once(&taken);
    let keys: HashSet<(&str, i64)> = taken
        .iter()
        .map(|(_, _, _, b)| (b["object_id"].as_str().unwrap(), b["lastChange"].as_i64().unwrap()))
        .collect();
    assert_eq!(keys, HashSet::from([("t1", first), ("t1", second), ("t2", second), ("t2", removed)]));
    for (key, id, persistent, body) in &taken {
        assert_eq!(id, body["id"].as_str().unwrap(), "message_id is the event id");
        assert!(*persistent, "persistent messages");
        assert_eq!(key, &format!("Task.{}", body["operation"].as_str().unwrap()));
        assert!(body["entity"] == "Task");
    }
    server.stop().await;
    broker.delete().await;
}

backend_tests!(per_database: changes_are_published_persistent_confirmed_and_in_order);

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl").args(args).stdout(std::process::Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "rabbitmqctl {args:?}");
}

/// The broker restarts while changes are pushed: they are published once it is back, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_change() {
    let Some(url) = amqp_url("a_broker_restart_loses_no_change") else { return };
    let broker = Broker::connect(&url).await;
    broker.bind("#").await;
    let (exchange, queue) = (broker.exchange.clone(), broker.queue.clone());
    let server = TestServer::start_with_on(config_with(broker.subscription(&url)), Backend::SQLITE).await;
    let api = server.api();
    let mut acked = HashSet::new();
    for i in 0..10 {
        acked.insert((format!("t{i}"), api.push("/taskChanges", json!([{"id": format!("t{i}")}])).await));
    }
    broker.take_until(20, |t| t.len() >= 10).await;
    drop(broker);

    rabbitmqctl(&["stop_app"]);
    let mut during = HashSet::new();
    for i in 10..20 {
        during.insert((format!("t{i}"), api.push("/taskChanges", json!([{"id": format!("t{i}")}])).await));
    }
    // The broker comes back once a publish has failed while it was away.
    let failed = EventFilter { states: vec!["failed".into()], ..EventFilter::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.store.events(&failed, None, 1).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no publish failed while the broker was stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    let broker = Broker { ..reconnect(&url, exchange, queue).await };
    let taken = broker
        .take_until(60, |t| {
            let got: HashSet<(String, i64)> = t
                .iter()
                .map(|(_, _, _, b)| (b["object_id"].as_str().unwrap().to_owned(), b["lastChange"].as_i64().unwrap()))
                .collect();
            during.is_subset(&got)
        })
        .await;
    assert_in_order_once(&taken);
    let rows = server.store.events(&EventFilter::default(), None, 100).await.unwrap();
    let retried = rows.iter().filter(|r| r.attempts > 1).count();
    assert!(retried > 0, "publishes failed while the broker was down, and were tried again");
    eprintln!("{retried} of {} events were published again after the broker restart", rows.len());
    server.stop().await;
    broker.delete().await;
}

/// The test's exchange and queue again, on a new connection.
async fn reconnect(url: &str, exchange: String, queue: String) -> Broker {
    let deadline = Instant::now() + Duration::from_secs(30);
    let connection = loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(connection) => break connection,
            Err(e) if Instant::now() < deadline => {
                eprintln!("the broker is not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the broker did not come back: {e}"),
        }
    };
    let channel = connection.create_channel().await.unwrap();
    Broker { channel, _connection: connection, exchange, queue }
}
