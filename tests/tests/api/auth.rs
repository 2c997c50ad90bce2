//! Authentication and partitions through real HTTP: every bad token is a `401` that changes
//! nothing, keys rotate without a restart, users never see or change each other's objects, roles
//! guard shared entities, cookies cannot write from other sites, Basic users work with curl, and
//! guessing is slowed down and then refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sync_server::Config;
use sync_server::auth::jwt::JwtConfig;
use sync_server::auth::scope::NamedScope;
use sync_server::auth::{AuthConfig, EntityScope};
use sync_server::config::EntityConfig;

use crate::helpers::{Api, Backend, SUITE_USER, ServerProcess, TestDb, TestServer, backend_tests, partition_of};

const SECRET: &str = "a shared secret of the tests, long enough for HS256";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "sync";

/// Key pairs made with `openssl`, as an operator makes them, and the files the server reads.
struct Keys {
    dir: tempfile::TempDir,
    rsa_private: Vec<u8>,
    rsa_public: Vec<u8>,
    ec_private: Vec<u8>,
    ed_private: Vec<u8>,
}

fn openssl(args: &[&str], dir: &Path) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"], d);
        openssl(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"], d);
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"], d);
        openssl(&["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"], d);
        let read = |f: &str| std::fs::read(d.join(f)).unwrap();
        Self {
            rsa_private: read("rsa.pem"),
            rsa_public: read("rsa.pub.pem"),
            ec_private: read("ec.pem"),
            ed_private: read("ed.pem"),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn encoding(&self, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.rsa_private).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.ec_private).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&self.ed_private).unwrap(),
            other => panic!("no test key for {other:?}"),
        }
    }

    /// Writes a JWKS of the EC and Ed25519 keys (and the RSA one under `rsa_kid`, if given).
    fn write_jwks(&self, rsa_kid: Option<&str>) {
        let jwk = |alg, kid: &str| {
            let mut jwk = Jwk::from_encoding_key(&self.encoding(alg), alg).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        };
        let mut keys = vec![jwk(Algorithm::ES256, "ec-1"), jwk(Algorithm::EdDSA, "ed-1")];
        keys.extend(rsa_kid.map(|kid| jwk(Algorithm::RS256, kid)));
        let file = self.path("jwks.json");
        let temp = self.path("jwks.json.new");
        std::fs::write(&temp, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
        std::fs::rename(temp, file).unwrap(); // as a rotation job replaces the file
    }

    fn jwt_config(&self) -> JwtConfig {
        std::fs::write(self.path("rsa.pub.pem"), &self.rsa_public).unwrap();
        self.write_jwks(None);
        JwtConfig {
            algorithms: ["HS256", "RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
            public_key_file: Some(self.path("rsa.pub.pem")),
            jwks_file: Some(self.path("jwks.json")),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway_secs: 5,
            ..JwtConfig::hs256(SECRET)
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims of `sub`, to be changed by a test.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now()})
}

fn token(keys: &Keys, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &keys.encoding(alg)).unwrap()
}

/// A token of `sub` signed with the shared secret.
fn hs(keys: &Keys, sub: &str) -> String {
    token(keys, Algorithm::HS256, None, &claims(sub))
}

fn config_with(jwt: JwtConfig) -> Config {
    Config { auth: AuthConfig { jwt: Some(jwt), ..AuthConfig::default() }, ..Config::default() }
}

/// The base64url of a JSON value, as a JWT part.
fn part(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn every_bad_token_is_refused_and_changes_nothing(backend: Backend) {
    let keys = Keys::new();
    let server = TestServer::start_with_on(config_with(keys.jwt_config()), backend).await;
    let api = server.api();

    // Every kind of key verifies its own tokens.
    for (alg, kid) in [
        (Algorithm::HS256, None),
        (Algorithm::RS256, None),
        (Algorithm::ES256, Some("ec-1")),
        (Algorithm::EdDSA, Some("ed-1")),
    ] {
        let ok = api.bearer(&token(&keys, alg, kid, &claims("alice")));
        let (status, body) = ok.get("/taskChanges?since=0").await;
        assert_eq!(status, 200, "{alg:?}: {body}");
    }

    let with = |change: Value| {
        let mut c = claims("alice");
        c.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        c
    };
    let mut without_sub = claims("alice");
    without_sub.as_object_mut().unwrap().remove("sub");
    let mut without_exp = claims("alice");
    without_exp.as_object_mut().unwrap().remove("exp");
    let other_secret = EncodingKey::from_secret(b"another secret entirely, not the server's one").unwrap();
    // HS256 "signed" with the RSA public key, as in the algorithm-confusion attack.
    let confused = EncodingKey::from_secret(&keys.rsa_public).unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("expired", token(&keys, Algorithm::HS256, None, &with(json!({"exp": now() - 3600})))),
        ("not yet valid", token(&keys, Algorithm::HS256, None, &with(json!({"nbf": now() + 3600})))),
        ("issued in the future", token(&keys, Algorithm::HS256, None, &with(json!({"iat": now() + 3600})))),
        ("bad signature", encode(&Header::new(Algorithm::HS256), &claims("alice"), &other_secret).unwrap()),
        ("alg none", format!("{}.{}.", part(&json!({"alg": "none", "typ": "JWT"})), part(&claims("alice")))),
        ("HS256 with the RSA public key", encode(&Header::new(Algorithm::HS256), &claims("alice"), &confused).unwrap()),
        ("wrong issuer", token(&keys, Algorithm::HS256, None, &with(json!({"iss": "https://evil.example"})))),
        ("wrong audience", token(&keys, Algorithm::HS256, None, &with(json!({"aud": "another-app"})))),
        ("no subject", token(&keys, Algorithm::HS256, None, &without_sub)),
        ("no expiry", token(&keys, Algorithm::HS256, None, &without_exp)),
        ("unknown kid", token(&keys, Algorithm::ES256, Some("nobody"), &claims("alice"))),
        (
            "an algorithm not allowed",
            encode(
                &Header::new(Algorithm::HS384),
                &claims("alice"),
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
    ];
    for (n, (what, bad_token)) in bad.iter().enumerate() {
        // Each from its own loopback address, so that the guessing limit does not answer first.
        let caller = from_address(&server.base_url, [127, 0, 1, n as u8 + 1], bad_token);
        let (status, body) = caller.get("/taskChanges?since=0").await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{what}: {body}");
        let (status, body) = caller.post("/taskChanges", r#"[{"id":"forged"}]"#).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    let unauthenticated = reqwest::get(format!("{}/taskChanges", server.base_url)).await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert!(unauthenticated.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer realm="));
    let alice = api.bearer(&hs(&keys, "alice"));
    assert!(alice.pull("/taskChanges", 0).await.updates.is_empty(), "no refused push applied anything");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_jwks_file_is_used_without_a_restart() {
    let keys = Keys::new();
    let server = TestServer::start_with_on(config_with(keys.jwt_config()), Backend::SQLITE).await;
    let rotated = server.api().bearer(&token(&keys, Algorithm::RS256, Some("rsa-2"), &claims("alice")));
    assert_eq!(rotated.get("/taskChanges?since=0").await.0, 401, "rsa-2 is not published yet");
    keys.write_jwks(Some("rsa-2"));
    let mut status = 0;
    for _ in 0..50 {
        status = rotated.get("/taskChanges?since=0").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the new key is picked up within the reload interval");
    server.stop().await;
}

async fn users_never_receive_or_change_each_others_objects(backend: Backend) {
    let keys = Keys::new();
    let server = TestServer::start_with_on(config_with(keys.jwt_config()), backend).await;
    // Two users with many objects each, then fifty, each group on an entity of its own.
    users_stay_apart(&server, &keys, "/pairChanges", 2, 4_000).await;
    users_stay_apart(&server, &keys, "/crowdChanges", 50, 1_000).await;
    server.stop().await;
}

/// `users` users write the same `objects` ids to `path` at once, with their own values, replay
/// the same idempotency key and remove one id; each then sees exactly their own objects, in full
/// pulls, pulls from a cursor and pages.
async fn users_stay_apart(server: &TestServer, keys: &Keys, path: &'static str, users: usize, objects: usize) {
    let users: Vec<(String, Api)> = (0..users)
        .map(|u| {
            let name = format!("user-{u}");
            let api = server.api().bearer(&hs(keys, &name));
            (name, api)
        })
        .collect();
    let writers = users.iter().cloned().map(|(name, api)| {
        tokio::spawn(async move {
            let items: Vec<Value> = (0..objects).map(|i| json!({"id": format!("item-{i}"), "owner": name})).collect();
            let body = Value::Array(items).to_string();
            let (status, first) = api.post_with(path, &body, &[("Idempotency-Key", "same-key")]).await;
            assert_eq!(status, 200, "{first}");
            let (_, again) = api.post_with(path, &body, &[("Idempotency-Key", "same-key")]).await;
            assert_eq!(again["now"], first["now"], "a replay of one's own key");
            let removed = api.push(path, json!([{"id": "item-0", "_removed": true}])).await;
            (first["now"].as_i64().unwrap(), removed)
        })
    });
    let stamps: Vec<(i64, i64)> = futures_join(writers).await;

    for ((name, api), (pushed, removed)) in users.iter().zip(stamps) {
        let full = api.pull(path, 0).await;
        assert_eq!(full.updates.len(), objects, "{name} sees exactly its own objects");
        assert_eq!(full.now, removed, "{name}'s cursor is its own clock");
        for update in &full.updates {
            match update["id"].as_str() {
                Some("item-0") => assert_eq!(update["_removed"], true, "{name}: {update}"),
                _ => assert_eq!(update["owner"].as_str(), Some(name.as_str()), "{name} received {update}"),
            }
        }
        let after_push = api.pull(path, pushed).await;
        assert_eq!(after_push.updates.iter().map(|u| u["id"].clone()).collect::<Vec<_>>(), [json!("item-0")]);
        let (_, page) = api.get(&format!("{path}?since=0&limit=100")).await;
        let page = page["updates"].as_array().unwrap();
        assert!(page.iter().all(|u| u["owner"] == json!(name) || u["_removed"] == true), "{name}: a page of others");
    }
}

/// An API with a bearer token whose requests come from `address` (any 127.0.0.0/8 address
/// reaches the server's loopback listener).
fn from_address(base_url: &str, address: [u8; 4], token: &str) -> Api {
    Api::with_client(
        base_url,
        reqwest::Client::builder().local_address(std::net::IpAddr::from(address)).default_headers(
            [(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap())].into_iter().collect(),
        ),
    )
}

/// Awaits every task, in order.
async fn futures_join<T>(tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

async fn roles_guard_shared_entities_and_claims_share_team_data(backend: Backend) {
    let keys = Keys::new();
    let mut config = config_with(keys.jwt_config());
    let entity = |name: &str, scope: EntityScope, write_roles: &[&str]| EntityConfig {
        name: name.into(),
        path: None,
        fields: [("price", "INT"), ("by", "TEXT")]
            .into_iter()
            .map(|(f, t)| (f.to_owned(), t.parse().unwrap()))
            .collect(),
        scope: Some(scope),
        read_roles: vec![],
        write_roles: write_roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    config.entities = vec![
        entity("Catalog", EntityScope::Named(NamedScope::Shared), &["editor"]),
        entity("Board", EntityScope::Claim { claim: "team".into() }, &[]),
        entity("Note", EntityScope::default(), &[]),
    ];
    let server = TestServer::start_with_on(config, backend).await;
    let as_ = |sub: &str, extra: Value| {
        let mut c = claims(sub);
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        server.api().bearer(&token(&keys, Algorithm::HS256, None, &c))
    };
    let editor = as_("ed", json!({"roles": ["editor"], "team": "red"}));
    let viewer = as_("vi", json!({"roles": "viewer", "team": "red"}));
    let blue = as_("bl", json!({"team": "blue"}));
    let nobody = as_("no", json!({}));

    editor.push("/catalogChanges", json!([{"id": "p1", "price": 3}])).await;
    let (status, body) = viewer.post("/catalogChanges", r#"[{"id":"p1","price":0}]"#).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(viewer.pull("/catalogChanges", 0).await.updates[0]["price"], 3, "read by all, unchanged");

    viewer.push("/boardChanges", json!([{"id": "card", "by": "vi"}])).await;
    assert_eq!(editor.pull("/boardChanges", 0).await.updates.len(), 1, "the red team shares its board");
    assert!(blue.pull("/boardChanges", 0).await.updates.is_empty(), "blue sees none of red's");
    assert_eq!(nobody.get("/boardChanges?since=0").await.0, 403, "no team claim, no team board");

    viewer.push("/noteChanges", json!([{"id": "n"}])).await;
    assert!(editor.pull("/noteChanges", 0).await.updates.is_empty(), "notes are per user");
    server.stop().await;
}

backend_tests!(
    per_database:
    every_bad_token_is_refused_and_changes_nothing,
    users_never_receive_or_change_each_others_objects,
    roles_guard_shared_entities_and_claims_share_team_data,
);

#[tokio::test]
async fn a_cookie_token_cannot_write_from_another_site() {
    let keys = Keys::new();
    let mut config = config_with(keys.jwt_config());
    config.auth.cookie = Some("sync_token".into());
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    let url = format!("{}/taskChanges", server.base_url);
    let cookie = format!("sync_token={}", hs(&keys, "alice"));
    let http = reqwest::Client::new();
    let pulled = http.get(format!("{url}?since=0")).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(pulled.status(), 200, "a cookie authenticates");
    let post = |origin: Option<String>| {
        let mut req = http.post(&url).header("Cookie", &cookie).body(r#"[{"id":"x"}]"#);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        req.send()
    };
    let forged = post(Some("https://evil.example".into())).await.unwrap();
    assert_eq!(forged.status(), 403, "another site cannot write with the user's cookie");
    let cross_site = http
        .post(&url)
        .header("Cookie", &cookie)
        .header("Sec-Fetch-Site", "cross-site")
        .body(r#"[{"id":"y"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert_eq!(post(Some(server.base_url.clone())).await.unwrap().status(), 200, "the server's own pages may");
    let alice = server.api().bearer(&hs(&keys, "alice"));
    let ids: Vec<Value> = alice.pull("/taskChanges", 0).await.updates.iter().map(|u| u["id"].clone()).collect();
    assert_eq!(ids, [json!("x")]);
    server.stop().await;
}

#[tokio::test]
async fn a_basic_user_hashed_by_the_binary_syncs_with_curl_and_guessing_is_refused() {
    let hashed = tokio::process::Command::new(crate::helpers::SERVER_BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut hashed = hashed;
    use tokio::io::AsyncWriteExt;
    hashed.stdin.take().unwrap().write_all(b"correct horse\n").await.unwrap();
    let out = hashed.wait_with_output().await.unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let mut config = Config::default();
    config.auth.basic =
        vec![sync_server::auth::basic::BasicUser { user: "backoffice".into(), password_hash: hash, roles: vec![] }];
    config.auth.max_failures = 5;
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    // curl runs as its own process; the test's runtime keeps serving meanwhile.
    let curl = async |user: &str, data: Option<&str>| {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", user]);
        if let Some(data) = data {
            cmd.args(["-H", "Content-Type: application/json", "-d", data]);
        }
        let out = cmd.arg(format!("{}/orderChanges", server.base_url)).output().await.expect("curl runs");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl("backoffice:correct horse", Some(r#"[{"id":"o1","total":12}]"#)).await, "200");
    assert_eq!(curl("backoffice:correct horse", None).await, "200");
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(curl("backoffice:guess", None).await);
    }
    assert_eq!(answers[..5], ["401"; 5], "{answers:?}");
    assert_eq!(answers[5], "429", "then refused: {answers:?}");
    let refused = reqwest::Client::new()
        .get(format!("{}/orderChanges", server.base_url))
        .basic_auth("backoffice", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429, "even the right password, until the window has passed");
    assert!(refused.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn the_client_asks_its_token_provider_again_after_a_401_and_syncs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let keys = Arc::new(Keys::new());
    let server = TestServer::start_with_on(config_with(keys.jwt_config()), Backend::SQLITE).await;
    let refreshes = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(Mutex::new({
        let mut stale = claims("alice");
        stale["exp"] = json!(now() - 3600);
        token(&keys, Algorithm::HS256, None, &stale)
    }));
    let provider = {
        let (keys, refreshes, current) = (Arc::clone(&keys), Arc::clone(&refreshes), Arc::clone(&current));
        move |refresh: bool| {
            if refresh {
                refreshes.fetch_add(1, Ordering::SeqCst);
                *current.lock().unwrap() = hs(&keys, "alice");
            }
            Ok(current.lock().unwrap().clone())
        }
    };
    let transport = sync_client::HttpTransport::builder(&server.base_url)
        .token_provider(provider)
        .sleep_with(Arc::new(|_| {}))
        .build()
        .unwrap();
    let device = crate::client_support::Device::with(
        "phone",
        [crate::client_support::todo_entity()],
        transport,
        sync_client::SyncOptions::default(),
    );
    device.store.insert("Todo", json!({"text": "buy milk", "done": false})).unwrap();
    let report = device.sync(sync_client::PreferRemote).await;
    assert_eq!((report.pushed(), refreshes.load(Ordering::SeqCst)), (1, 1), "refreshed once, then synced");
    let alice = server.api().bearer(&hs(&keys, "alice"));
    assert_eq!(alice.pull("/todoChanges", 0).await.updates[0]["text"], "buy milk");

    // A provider that cannot give a valid token: the sync fails with the server's 401.
    let expired = {
        let mut stale = claims("alice");
        stale["exp"] = json!(now() - 3600);
        token(&keys, Algorithm::HS256, None, &stale)
    };
    let stuck = sync_client::HttpTransport::builder(&server.base_url)
        .token_provider(move |_| Ok(expired.clone()))
        .build()
        .unwrap();
    let other = device.through(stuck, sync_client::SyncOptions::default());
    let failed = tokio::task::spawn_blocking(move || other.sync_all(&sync_client::PreferRemote)).await.unwrap();
    let error = failed.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(sync_server::error::chain(&error).contains("answered 401"), "{}", sync_server::error::chain(&error));
    server.stop().await;
}

/// The `*_with_auth` variants of the shared suite test what they say: their servers, in this
/// process or as the shipped binary, refuse requests without a token, and keep the suite user's
/// objects in that user's partition, apart from everyone else's.
#[tokio::test]
async fn the_suites_authenticated_variants_authenticate_and_partition() {
    let backend = Backend::SQLITE.with_auth();
    let server = TestServer::start_on(backend).await;
    let (status, body) = Api::new(server.base_url.clone()).get("/taskChanges?since=0").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    server.api().push("/taskChanges", json!([{"id": "mine"}])).await;
    let everyone = sync_proto::PullQuery::default();
    let mine = server.store.pull(&backend.scope("Task"), everyone).await.unwrap();
    assert_eq!(mine.objects.len(), 1, "in {}", partition_of(SUITE_USER));
    let outside = server.store.pull(&Backend::SQLITE.scope("Task"), everyone).await.unwrap();
    assert!(outside.objects.is_empty());
    let other = server.endpoint().as_user("someone else").api();
    assert!(other.pull("/taskChanges", 0).await.updates.is_empty());
    server.stop().await;

    let db = TestDb::create(backend).await;
    let process = ServerProcess::spawn(&db, &[]).await;
    let (status, _) = Api::new(process.base_url.clone()).get("/taskChanges?since=0").await;
    assert_eq!(status, 401);
    process.api().push("/taskChanges", json!([{"id": "mine"}])).await;
    assert!(process.endpoint().as_user("someone else").api().pull("/taskChanges", 0).await.updates.is_empty());
    process.signal_and_wait(15).await;
}
