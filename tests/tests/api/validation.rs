//! Rules of other systems before a push is accepted: a `[[validation]]` hook over real HTTP and a
//! validator of an embedding Rust application. A rejection is `422 rejected` with the reason, a
//! hook that fails or does not answer is `503`, and in every case nothing is applied.

use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use sync_server::validation::{PushToValidate, PushValidator, ValidationConfig, Verdict};
use sync_server::{Application, Config};

use crate::helpers::{Backend, TestDb, TestServer, backend_tests};

const SECRET: &str = "whsec_dGhlIHNlY3JldCBvZiB0aGUgdmFsaWRhdGlvbiBob29r";

/// The back office's rules: no negative totals; orders of "slow" never answered in time;
/// orders of "broken" answered 500. Records what it was sent.
async fn back_office(seen: Arc<Mutex<Vec<Value>>>) -> String {
    async fn judge(req: HttpRequest, body: web::Bytes, seen: web::Data<Mutex<Vec<Value>>>) -> HttpResponse {
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let signed = sync_proto::webhook::verify(
            &[SECRET],
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &body,
            now,
            300,
        );
        if signed.is_err() {
            return HttpResponse::Unauthorized().finish();
        }
        let request: Value = serde_json::from_slice(&body).unwrap();
        seen.lock().unwrap().push(request.clone());
        let items = request["push"].as_array().unwrap();
        if items.iter().any(|i| i["customer"] == "slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if items.iter().any(|i| i["customer"] == "broken") {
            return HttpResponse::InternalServerError().body("the rules engine is down");
        }
        if items.iter().any(|i| i["total"].as_f64().is_some_and(|t| t < 0.0)) {
            return HttpResponse::UnprocessableEntity().json(json!({"message": "totals cannot be negative"}));
        }
        HttpResponse::NoContent().finish()
    }
    let data = web::Data::from(seen);
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(judge)))
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}/validate")
}

async fn a_validation_hook_accepts_rejects_or_fails_pushes_and_a_refused_push_changes_nothing(backend: Backend) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = back_office(Arc::clone(&seen)).await;
    let config = Config {
        validations: vec![ValidationConfig {
            name: "backoffice".into(),
            url,
            entities: vec!["Order".into()],
            timeout_secs: 1.0,
            secrets: vec![SECRET.into()],
        }],
        ..Config::default()
    };
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    let accepted = api.push("/orderChanges", json!([{"id": "o1", "total": 12.5, "customer": "ann"}])).await;
    let before = api.pull("/orderChanges", 0).await;

    let (status, body) = api.post("/orderChanges", r#"[{"id":"o2","total":3},{"id":"o1","total":-1}]"#).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("rejected")), "{body}");
    assert_eq!(body["message"], "rejected by backoffice: totals cannot be negative");
    for (customer, why) in [("broken", "failed (HTTP 500)"), ("slow", "did not answer in time")] {
        let (status, body) = api.post("/orderChanges", &json!([{"id": "o3", "customer": customer}]).to_string()).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    let after = api.pull("/orderChanges", 0).await;
    assert_eq!((after.now, after.updates), (before.now, before.updates), "refused pushes apply nothing");

    // Other entities are not the hook's.
    api.push("/noteChanges", json!([{"id": "n", "total": -5}])).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(seen[0]["entity"], "Order");
    assert_eq!(seen[0]["partition"], backend.scope("Order").partition(), "the caller's partition");
    assert_eq!(seen[0]["push"], json!([{"id": "o1", "total": 12.5, "customer": "ann"}]), "the push as sent");
    assert!(seen[0]["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(accepted > 0);
    server.stop().await;
}

/// A rule of the embedding application: no order above 1,000 from the "trial" partition.
#[derive(Debug)]
struct TrialLimit;

#[async_trait::async_trait]
impl PushValidator for TrialLimit {
    async fn validate(&self, push: PushToValidate<'_>) -> Result<(), Verdict> {
        let items: Vec<Value> = serde_json::from_slice(push.body).map_err(|e| Verdict::Unavailable(e.to_string()))?;
        if push.scope.entity_name().as_str() == "Order" && items.iter().any(|i| i["total"].as_f64() > Some(1000.0)) {
            return Err(Verdict::Rejected("trial accounts order at most 1,000".into()));
        }
        Ok(())
    }
}

async fn an_embedding_application_validates_pushes_with_its_own_rules(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = Application::build_with(TestServer::config_over(Config::default(), &db), vec![Arc::new(TrialLimit)])
        .await
        .unwrap();
    let server = TestServer::serve(app, db);
    let api = server.api();
    api.push("/orderChanges", json!([{"id": "small", "total": 10}])).await;
    let (status, body) = api.post("/orderChanges", r#"[{"id":"big","total":5000}]"#).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("trial accounts order at most 1,000")), "{body}");
    assert_eq!(api.pull("/orderChanges", 0).await.updates.len(), 1);
    server.stop().await;
}

backend_tests!(
    a_validation_hook_accepts_rejects_or_fails_pushes_and_a_refused_push_changes_nothing,
    an_embedding_application_validates_pushes_with_its_own_rules,
);
