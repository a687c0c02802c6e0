//! A Docker token server (the `auth: token` realm) whose JWTs docker-registry 2.8 accepts.
//!
//! What distribution 2.8 checks (`registry/auth/token/token.go`): `iss` is the configured issuer,
//! `aud` equals the configured service and is a JSON *string* (a list fails to parse, and the
//! whole token is then "malformed"), `exp`/`nbf` with 60 s of leeway, a non-empty signature, and
//! the signing key: from an `x5c` chain verified against `rootcertbundle`, or from a `kid` that
//! is the libtrust key ID of one of the bundle's certificates. ES256 (P-256, raw `r||s`) works.
//!
//! Endpoints:
//! - `GET /token?service=S&scope=A&scope=B` (several scopes may also be space-separated in one
//!   parameter), optionally with Basic credentials: the Docker token flow.
//! - `POST /token` with a form `grant_type=refresh_token&refresh_token=...&service=...&scope=...`
//!   (how clients use a Docker identity token) or `grant_type=password&username=...&password=...`.
//!
//! The server logs nothing, and its request records hold no password or token.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::pki::Pki;
use super::registry::RegistryAuth;
use super::server::BackgroundServer;

/// What a request without valid credentials is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnonymousAccess {
    /// A token with an empty `access` list (what Docker Hub does for a private repository).
    Nothing,
    /// `pull` on any repository that asked for it, nothing else.
    Pull,
}

/// How the JWT header names the signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyReference {
    /// `kid`: the libtrust key ID of the key ([`Pki::token_kid`]).
    Kid,
    /// `x5c`: the signing certificate itself, verified against the registry's root bundle.
    X5c,
}

/// Configuration of a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenServerOptions {
    /// `iss` of the tokens; the registry must be configured with the same issuer.
    pub issuer: String,
    /// The service this server issues tokens for (`aud`); requests naming another are refused.
    pub service: String,
    /// PKCS#8 PEM EC P-256 key that signs tokens.
    pub signing_key: PathBuf,
    /// PEM certificate of that key: the registry's `rootcertbundle`.
    pub signing_cert: PathBuf,
    /// libtrust key ID of the key, sent as `kid`.
    pub kid: String,
    /// The certificate as base64 DER, sent as `x5c` in [`KeyReference::X5c`] mode.
    pub x5c: String,
    /// How the JWT header names the key.
    pub key_reference: KeyReference,
    /// The one user (name, password) accepted in Basic credentials; granted every action asked.
    pub user: Option<(String, String)>,
    /// The refresh token (Docker identity token) accepted by `POST /token`; it stands for `user`.
    pub refresh_token: Option<String>,
    /// What anonymous requests get.
    pub anonymous: AnonymousAccess,
    /// `expires_in` in answers (seconds).
    pub expires_in: u64,
    /// Lifetime written into the JWT `exp` (seconds from now, may be negative); `None` means
    /// `expires_in`. Lets a test make the registry refuse tokens the client still thinks valid.
    /// The registry allows 60 s of leeway, so an already-expired token needs `< -60`.
    pub token_lifetime: Option<i64>,
    /// When set, `token_lifetime` applies only to requests whose `User-Agent` starts with this
    /// (e.g. `retagd/`), so the test's own skopeo pushes keep working tokens.
    pub token_lifetime_agent: Option<String>,
}

impl TokenServerOptions {
    /// Issuer `retagd-test-issuer`, service `retagd-test-registry`, the PKI's token key named by
    /// `kid`, no user, anonymous gets nothing, tokens valid 300 s.
    pub fn new(pki: &Pki) -> TokenServerOptions {
        TokenServerOptions {
            issuer: "retagd-test-issuer".to_string(),
            service: "retagd-test-registry".to_string(),
            signing_key: pki.token_key.clone(),
            signing_cert: pki.token_cert.clone(),
            kid: pki.token_kid.clone(),
            x5c: pki.token_cert_x5c(),
            key_reference: KeyReference::Kid,
            user: None,
            refresh_token: None,
            anonymous: AnonymousAccess::Nothing,
            expires_in: 300,
            token_lifetime: None,
            token_lifetime_agent: None,
        }
    }

    /// Accept `user`/`password` as Basic credentials.
    pub fn with_user(mut self, user: &str, password: &str) -> TokenServerOptions {
        self.user = Some((user.to_string(), password.to_string()));
        self
    }

    /// Accept `token` in the OAuth2 refresh form (it needs [`Self::with_user`] too).
    pub fn with_refresh_token(mut self, token: &str) -> TokenServerOptions {
        self.refresh_token = Some(token.to_string());
        self
    }

    /// What anonymous requests get.
    pub fn with_anonymous(mut self, anonymous: AnonymousAccess) -> TokenServerOptions {
        self.anonymous = anonymous;
        self
    }

    /// `expires_in` of the answers (and the JWT lifetime unless set apart).
    pub fn with_expires_in(mut self, seconds: u64) -> TokenServerOptions {
        self.expires_in = seconds;
        self
    }

    /// Name the signing key by `kid` or `x5c`.
    pub fn with_key_reference(mut self, reference: KeyReference) -> TokenServerOptions {
        self.key_reference = reference;
        self
    }
}

/// One request the token server answered, for tests to assert on. Holds no secret.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// When it arrived.
    pub at: SystemTime,
    /// `GET` (Docker token flow) or `POST` (OAuth2 form).
    pub method: String,
    /// `grant_type` of a POST.
    pub grant_type: Option<String>,
    /// The `service` parameter.
    pub service: Option<String>,
    /// Every scope asked for, one per element (space-separated ones split).
    pub scopes: Vec<String>,
    /// Whether the request carried Basic credentials (right or wrong).
    pub basic_auth: bool,
    /// The user the request authenticated as, if any.
    pub user: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// What the token grants, as scope strings (`repository:NAME:pull,push`).
    pub granted: Vec<String>,
}

/// A running token server; dropping it stops it.
pub struct TokenServer {
    /// Its address.
    pub addr: std::net::SocketAddr,
    state: Arc<TokenState>,
    _server: BackgroundServer,
}

struct TokenState {
    options: Mutex<TokenServerOptions>,
    key: EncodingKey,
    requests: Mutex<Vec<TokenRequest>>,
    next_jti: AtomicU64,
}

impl TokenServer {
    /// Starts the server on `127.0.0.1:0`.
    pub fn start(options: TokenServerOptions) -> TokenServer {
        let pem = std::fs::read(&options.signing_key).unwrap_or_else(|e| {
            panic!(
                "read token signing key {}: {e}",
                options.signing_key.display()
            )
        });
        let key = EncodingKey::from_ec_pem(&pem).expect("token signing key is PKCS#8 EC PEM");
        let state = Arc::new(TokenState {
            options: Mutex::new(options),
            key,
            requests: Mutex::new(Vec::new()),
            next_jti: AtomicU64::new(1),
        });
        let router_state = state.clone();
        let server = BackgroundServer::spawn("token-server", move |_addr| {
            axum::Router::new()
                .route("/token", get(get_token).post(post_token))
                .with_state(router_state)
        });
        TokenServer {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    /// The realm URL for the registry config: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The service name tokens are issued for.
    pub fn service(&self) -> String {
        self.options().service
    }

    /// The issuer of the tokens.
    pub fn issuer(&self) -> String {
        self.options().issuer
    }

    /// The registry side of this server: `auth: token` with matching realm, service, issuer
    /// and root certificate bundle.
    pub fn registry_auth(&self) -> RegistryAuth {
        let options = self.options();
        RegistryAuth::Token {
            realm: self.realm(),
            service: options.service,
            issuer: options.issuer,
            root_cert_bundle: options.signing_cert,
        }
    }

    /// A snapshot of every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .requests
            .lock()
            .expect("token records lock")
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state
            .requests
            .lock()
            .expect("token records lock")
            .clear();
    }

    /// Changes `expires_in` of later answers.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state
            .options
            .lock()
            .expect("token options lock")
            .expires_in = seconds;
    }

    /// Changes the JWT lifetime of later tokens (see [`TokenServerOptions::token_lifetime`]).
    pub fn set_token_lifetime(&self, seconds: Option<i64>) {
        self.state
            .options
            .lock()
            .expect("token options lock")
            .token_lifetime = seconds;
    }

    /// [`Self::set_token_lifetime`] for clients whose `User-Agent` starts with `agent` only.
    pub fn set_token_lifetime_for_agent(&self, agent: &str, seconds: Option<i64>) {
        let mut options = self.state.options.lock().expect("token options lock");
        options.token_lifetime = seconds;
        options.token_lifetime_agent = Some(agent.to_string());
    }

    /// Changes what anonymous requests get from now on.
    pub fn set_anonymous(&self, anonymous: AnonymousAccess) {
        self.state
            .options
            .lock()
            .expect("token options lock")
            .anonymous = anonymous;
    }

    fn options(&self) -> TokenServerOptions {
        self.state
            .options
            .lock()
            .expect("token options lock")
            .clone()
    }
}

/// Who a request authenticated as.
enum Identity {
    Anonymous,
    User(String),
    Refused,
}

async fn get_token(
    State(state): State<Arc<TokenState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let mut service = None;
    let mut scopes = Vec::new();
    let mut offline = false;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "service" => service = Some(value.into_owned()),
            "scope" => scopes.extend(value.split_whitespace().map(str::to_string)),
            "offline_token" => offline = value == "true",
            _ => {}
        }
    }
    let options = options_for(&state, &headers);
    let basic = basic_credentials(&headers);
    let identity = match &basic {
        None => Identity::Anonymous,
        Some((user, password)) => check_password(&options, user, password),
    };
    let refresh = offline
        .then(|| options.refresh_token.clone())
        .flatten()
        .filter(|_| matches!(identity, Identity::User(_)));
    answer(
        &state,
        &options,
        Request {
            method: "GET",
            grant_type: None,
            service,
            scopes,
            basic_auth: basic.is_some(),
            identity,
            refresh_token: refresh,
        },
    )
}

async fn post_token(
    State(state): State<Arc<TokenState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut grant_type = None;
    let mut service = None;
    let mut scopes = Vec::new();
    let mut refresh_token = None;
    let mut username = None;
    let mut password = None;
    let mut offline = false;
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "grant_type" => grant_type = Some(value.into_owned()),
            "service" => service = Some(value.into_owned()),
            "scope" => scopes.extend(value.split_whitespace().map(str::to_string)),
            "refresh_token" => refresh_token = Some(value.into_owned()),
            "username" => username = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            "access_type" => offline = value == "offline",
            _ => {}
        }
    }
    let options = options_for(&state, &headers);
    let basic_auth = basic_credentials(&headers).is_some();
    let (identity, new_refresh) = match grant_type.as_deref() {
        Some("refresh_token") => {
            let valid = matches!(
                (&options.refresh_token, &refresh_token),
                (Some(expected), Some(given)) if expected == given
            );
            match (&options.user, valid) {
                (Some((user, _)), true) => (Identity::User(user.clone()), None),
                _ => (Identity::Refused, None),
            }
        }
        Some("password") => {
            let identity = check_password(
                &options,
                username.as_deref().unwrap_or_default(),
                password.as_deref().unwrap_or_default(),
            );
            let refresh = match identity {
                Identity::User(_) if offline => options.refresh_token.clone(),
                _ => None,
            };
            (identity, refresh)
        }
        _ => {
            let status = StatusCode::BAD_REQUEST;
            record(
                &state,
                TokenRequest {
                    at: SystemTime::now(),
                    method: "POST".to_string(),
                    grant_type,
                    service,
                    scopes,
                    basic_auth,
                    user: None,
                    status: status.as_u16(),
                    granted: Vec::new(),
                },
            );
            return (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"unsupported_grant_type"}"#,
            )
                .into_response();
        }
    };
    answer(
        &state,
        &options,
        Request {
            method: "POST",
            grant_type,
            service,
            scopes,
            basic_auth,
            identity,
            refresh_token: new_refresh,
        },
    )
}

struct Request {
    method: &'static str,
    grant_type: Option<String>,
    service: Option<String>,
    scopes: Vec<String>,
    basic_auth: bool,
    identity: Identity,
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

fn answer(state: &TokenState, options: &TokenServerOptions, request: Request) -> Response {
    let record_of = |status: StatusCode, user: Option<String>, granted: Vec<String>| {
        record(
            state,
            TokenRequest {
                at: SystemTime::now(),
                method: request.method.to_string(),
                grant_type: request.grant_type.clone(),
                service: request.service.clone(),
                scopes: request.scopes.clone(),
                basic_auth: request.basic_auth,
                user,
                status: status.as_u16(),
                granted,
            },
        )
    };
    if let Some(service) = &request.service {
        if *service != options.service {
            record_of(StatusCode::BAD_REQUEST, None, Vec::new());
            return error(
                StatusCode::BAD_REQUEST,
                "DENIED",
                &format!("this token server serves {:?}", options.service),
            );
        }
    }
    let user = match &request.identity {
        Identity::Refused => {
            record_of(StatusCode::UNAUTHORIZED, None, Vec::new());
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid credentials",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"retagd-test-token\""),
            );
            return response;
        }
        Identity::Anonymous => None,
        Identity::User(user) => Some(user.clone()),
    };

    let access = grant(&request.scopes, user.is_some(), options.anonymous);
    let granted: Vec<String> = access
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect();
    let now = SystemTime::now();
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let lifetime = options.token_lifetime.unwrap_or(options.expires_in as i64);
    let claims = Claims {
        iss: options.issuer.clone(),
        sub: user.clone().unwrap_or_default(),
        aud: options.service.clone(),
        exp: now_secs + lifetime,
        nbf: now_secs,
        iat: now_secs,
        jti: format!(
            "retagd-test-{now_secs}-{}",
            state.next_jti.fetch_add(1, Ordering::Relaxed)
        ),
        access,
    };
    let mut header = Header::new(Algorithm::ES256);
    match options.key_reference {
        KeyReference::Kid => header.kid = Some(options.kid.clone()),
        KeyReference::X5c => header.x5c = Some(vec![options.x5c.clone()]),
    }
    let token = jsonwebtoken::encode(&header, &claims, &state.key).expect("sign the token");
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": options.expires_in,
        "issued_at": rfc3339(now),
    });
    if request.method == "POST" {
        body["scope"] = serde_json::Value::String(granted.join(" "));
    }
    if let Some(refresh) = &request.refresh_token {
        body["refresh_token"] = serde_json::Value::String(refresh.clone());
    }
    record_of(StatusCode::OK, user, granted);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The policy: an authenticated user gets every action asked for; anonymous gets nothing, or
/// only `pull` on repositories.
fn grant(scopes: &[String], authenticated: bool, anonymous: AnonymousAccess) -> Vec<Access> {
    let mut access = Vec::new();
    for scope in scopes {
        // `type:name:actions`; the name itself may hold a colon (a port), so split at both ends.
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let actions: Vec<String> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .filter(|a| {
                authenticated
                    || (anonymous == AnonymousAccess::Pull && kind == "repository" && *a == "pull")
            })
            .map(str::to_string)
            .collect();
        if !actions.is_empty() {
            access.push(Access {
                kind: kind.to_string(),
                name: name.to_string(),
                actions,
            });
        }
    }
    access
}

fn check_password(options: &TokenServerOptions, user: &str, password: &str) -> Identity {
    match &options.user {
        Some((expected_user, expected_password))
            if expected_user == user && expected_password == password =>
        {
            Identity::User(user.to_string())
        }
        _ => Identity::Refused,
    }
}

/// The options, with `token_lifetime` dropped for a client it is not meant for.
fn options_for(state: &TokenState, headers: &HeaderMap) -> TokenServerOptions {
    let mut options = state.options.lock().expect("token options lock").clone();
    if let Some(agent) = &options.token_lifetime_agent {
        let theirs = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !theirs.starts_with(agent.as_str()) {
            options.token_lifetime = None;
        }
    }
    options
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn record(state: &TokenState, request: TokenRequest) {
    state
        .requests
        .lock()
        .expect("token records lock")
        .push(request);
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": null}],
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), the `issued_at` format.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
