//! Authentication as the suite's `*_with_auth` variants turn it on: HS256 bearer tokens signed
//! with one secret, entities in the default scope (each user their own partition), and the
//! [`Endpoint`] a client uses to reach a server as one user.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use sync_server::Config;

use super::Api;

/// The `[auth]` section of the authenticated variants, as an operator writes it.
pub const SUITE_AUTH_TOML: &str = r#"
[auth.jwt]
algorithms = ["HS256"]
secret = "the secret of the authenticated variants of the test suite"
"#;

/// The user the authenticated variants act as, unless a test names others.
pub const SUITE_USER: &str = "tester";

/// The partition of `user`'s objects in entities of the default scope.
pub fn partition_of(user: &str) -> String {
    format!("user:{user}")
}

/// `config` with [`SUITE_AUTH_TOML`]'s authentication; panics if it configures its own.
pub fn with_suite_auth(mut config: Config) -> Config {
    assert!(!config.auth.is_on(), "a test that configures its own authentication runs without the suite's");
    let suite: Config = toml::from_str(SUITE_AUTH_TOML).expect("the suite's [auth] parses");
    config.auth = suite.auth;
    config
}

/// A bearer token of `user`, valid for an hour.
pub fn token_of(user: &str) -> String {
    let suite: Config = toml::from_str(SUITE_AUTH_TOML).expect("the suite's [auth] parses");
    let secret = suite.auth.jwt.and_then(|jwt| jwt.secret).expect("the suite signs with a secret");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let claims = json!({"sub": user, "iat": now, "exp": now + 3600});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key"))
        .expect("token signs")
}

/// Where a client reaches a server: its address and, when the server authenticates, the token
/// of the user it acts as.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The bearer token to send, if the server authenticates.
    pub token: Option<String>,
}

impl Endpoint {
    /// A server that does not authenticate.
    pub fn open(base_url: &str) -> Self {
        Self { base_url: base_url.to_owned(), token: None }
    }

    /// The same server as `user`: another partition when it authenticates, the same one when
    /// it does not.
    pub fn as_user(&self, user: &str) -> Self {
        Self { base_url: self.base_url.clone(), token: self.token.as_ref().map(|_| token_of(user)) }
    }

    /// The same credentials sent to another address (a proxy in front of the server).
    pub fn via(&self, base_url: &str) -> Self {
        Self { base_url: base_url.to_owned(), token: self.token.clone() }
    }

    /// The `Authorization` header value to send, if any.
    pub fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }

    /// The header lines a hand-written HTTP/1.1 request adds: `Authorization: ...\r\n` or nothing.
    pub fn header_lines(&self) -> String {
        self.authorization().map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default()
    }

    /// Typed requests to this server with these credentials.
    pub fn api(&self) -> Api {
        let api = Api::new(self.base_url.clone());
        match &self.token {
            Some(token) => api.bearer(token),
            None => api,
        }
    }

    /// A `reqwest` request builder with these credentials, for requests the typed API does not make.
    pub fn request(&self, client: &reqwest::Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = client.request(method, format!("{}{path}", self.base_url));
        match self.authorization() {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }
}
