//! Smoke tests of the integration-test harness in `tests/it/support/`: every piece works against the
//! real components (docker-registry 2.8, skopeo, openssl) before other tests rely on it.

use crate::support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use support::images::{
    put_tags, skopeo_inspect_raw, skopeo_push, Artifact, Pusher, SkopeoOptions, TestImage,
    TestIndex, OCI_MANIFEST,
};
use support::pki::Pki;
use support::prometheus::{promtool_check_metrics, Prometheus};
use support::proxy::{Fault, FaultAction, FaultProxy};
use support::registry::{Registry, RegistryOptions};
use support::server::BackgroundServer;
use support::token::{AnonymousAccess, KeyReference, TokenServer, TokenServerOptions};
use support::{http_client, https_client, poll_until, sha256_digest, STARTUP_DEADLINE};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.expect("request is answered").status()
}

/// Fetches a token from the token server's realm, with Basic credentials if given.
async fn fetch_token(
    server: &TokenServer,
    basic: Option<(&str, &str)>,
    scopes: &[&str],
) -> (StatusCode, serde_json::Value) {
    let mut url = url::Url::parse(&server.realm()).expect("the realm is a URL");
    url.query_pairs_mut()
        .append_pair("service", &server.service());
    for scope in scopes {
        url.query_pairs_mut().append_pair("scope", scope);
    }
    let mut request = http_client().get(url);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("the token server answers");
    let status = response.status();
    let body = response.bytes().await.expect("the token answer has a body");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn bearer(token: &serde_json::Value) -> String {
    format!(
        "Bearer {}",
        token["token"].as_str().expect("answer has a token")
    )
}

#[test]
fn test_images_are_deterministic_and_self_consistent() {
    let a = TestImage::generate(7, &[1000, 10]);
    let b = TestImage::generate(7, &[1000, 10]);
    let c = TestImage::generate(8, &[1000, 10]);
    assert_eq!(a.manifest, b.manifest);
    assert_ne!(a.digest, c.digest);
    assert_eq!(a.layers[0].data.len(), 1000);
    assert_eq!(a.digest, sha256_digest(&a.manifest));
    let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
    assert_eq!(manifest["config"]["digest"], a.config.digest.as_str());
    assert_eq!(manifest["layers"][1]["size"], 10);

    let index = TestIndex::generate(7, &[100]);
    let parsed: serde_json::Value = serde_json::from_slice(&index.manifest).unwrap();
    let platforms: Vec<&str> = parsed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    assert_eq!(
        parsed["manifests"][1]["digest"],
        index.children[1].digest.as_str()
    );

    let leap_day = SystemTime::UNIX_EPOCH + Duration::from_secs(951_829_445);
    assert_eq!(support::token::rfc3339(leap_day), "2000-02-29T13:04:05Z");
}

#[tokio::test]
async fn an_anonymous_registry_starts_on_a_kernel_chosen_port_and_accepts_a_pushed_image() {
    let registry = Registry::start(RegistryOptions::anonymous());
    assert_ne!(registry.addr.port(), 0);
    assert_eq!(
        registry.url(),
        format!("http://127.0.0.1:{}", registry.addr.port())
    );
    assert!(
        registry.log().contains("listening on"),
        "{}",
        registry.log()
    );

    let image = TestImage::generate(1, &[64 * KIB, 3]);
    let pusher = Pusher::new(&registry.url());
    pusher.push_image("smoke/plain", &image, Some("v1")).await;

    let (bytes, content_type) = pusher.get_manifest("smoke/plain", "v1").await;
    assert_eq!(bytes, image.manifest);
    assert_eq!(content_type, OCI_MANIFEST);
    let read_back = skopeo_inspect_raw(
        &format!("{}/smoke/plain:v1", registry.host()),
        &SkopeoOptions::new(),
    )
    .await;
    assert_eq!(read_back, image.manifest);
}

#[tokio::test]
async fn an_htpasswd_registry_refuses_anonymous_clients_and_accepts_basic_credentials() {
    let registry = Registry::start(RegistryOptions::htpasswd("alice", "s3cret"));
    let client = http_client();
    let anonymous = client
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let wrong = client
        .get(format!("{}/v2/", registry.url()))
        .basic_auth("alice", Some("nope"));
    assert_eq!(status_of(wrong).await, StatusCode::UNAUTHORIZED);

    let index = TestIndex::generate(2, &[4 * KIB]);
    Pusher::new(&registry.url())
        .basic_auth("alice", "s3cret")
        .push_index("smoke/basic", &index, Some("multi"))
        .await;
    let options = SkopeoOptions::new().with_creds("alice", "s3cret");
    let read_back =
        skopeo_inspect_raw(&format!("{}/smoke/basic:multi", registry.host()), &options).await;
    assert_eq!(read_back, index.manifest);
}

#[tokio::test]
async fn a_skopeo_push_through_token_auth_succeeds_and_reads_back_the_same_bytes() {
    let pki = Pki::generate();
    assert_eq!(
        pki.token_kid.split(':').count(),
        12,
        "libtrust key ID: {}",
        pki.token_kid
    );
    let tokens = TokenServer::start(TokenServerOptions::new(&pki).with_user("bob", "hunter2"));
    let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));

    // The registry sends clients to the token server.
    let response = http_client()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains(&format!("realm=\"{}\"", tokens.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", tokens.service())),
        "{challenge}"
    );

    let index = TestIndex::generate(3, &[256 * KIB, 1]);
    let options = SkopeoOptions::new().with_creds("bob", "hunter2");
    let reference = format!("{}/smoke/token:v1", registry.host());
    skopeo_push(Artifact::Index(&index), &reference, &options).await;
    assert_eq!(
        skopeo_inspect_raw(&reference, &options).await,
        index.manifest
    );
    let child = format!(
        "{}/smoke/token@{}",
        registry.host(),
        index.children[1].digest
    );
    assert_eq!(
        skopeo_inspect_raw(&child, &options).await,
        index.children[1].manifest
    );

    let requests = tokens.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.basic_auth && r.status == 200),
        "{requests:#?}"
    );
    assert!(
        requests.iter().all(|r| r.user.as_deref() == Some("bob")),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r
            .scopes
            .iter()
            .any(|s| s == "repository:smoke/token:pull,push")),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn the_registry_accepts_tokens_naming_their_key_by_x5c_and_by_kid() {
    let pki = Pki::generate();
    for reference in [KeyReference::X5c, KeyReference::Kid] {
        let options = TokenServerOptions::new(&pki)
            .with_user("bob", "hunter2")
            .with_key_reference(reference);
        let tokens = TokenServer::start(options);
        let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));
        let image = TestImage::generate(4, &[10]);
        let (status, token) = fetch_token(
            &tokens,
            Some(("bob", "hunter2")),
            &["repository:smoke/x5c:pull,push"],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{token}");
        let client = http_client();
        let base = registry.url();
        let blob = &image.config;
        let start = client
            .post(format!("{base}/v2/smoke/x5c/blobs/uploads/"))
            .header(AUTHORIZATION, bearer(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(
            start.status(),
            StatusCode::ACCEPTED,
            "{reference:?}: {}",
            registry.log()
        );
        let location = start.headers()[LOCATION].to_str().unwrap().to_string();
        let put = client
            .put(format!("{location}&digest={}", blob.digest))
            .header(AUTHORIZATION, bearer(&token))
            .body(blob.data.clone());
        assert_eq!(status_of(put).await, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn the_token_server_grants_by_policy_and_accepts_the_refresh_token_form() {
    let pki = Pki::generate();
    let options = TokenServerOptions::new(&pki)
        .with_user("bob", "hunter2")
        .with_refresh_token("identity-token-123")
        .with_anonymous(AnonymousAccess::Pull)
        .with_expires_in(42);
    let tokens = TokenServer::start(options);
    let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));
    let image = TestImage::generate(5, &[100]);
    skopeo_push(
        Artifact::Image(&image),
        &format!("{}/smoke/policy:v1", registry.host()),
        &SkopeoOptions::new().with_creds("bob", "hunter2"),
    )
    .await;
    tokens.clear();
    let client = http_client();
    let manifest_url = format!("{}/v2/smoke/policy/manifests/v1", registry.url());

    // Anonymous: pull only, two scopes in one parameter.
    let (status, anonymous) = fetch_token(
        &tokens,
        None,
        &["repository:smoke/policy:pull,push repository:other:pull"],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(anonymous["expires_in"], 42);
    assert_eq!(anonymous["token"], anonymous["access_token"]);
    let issued_at = anonymous["issued_at"].as_str().unwrap();
    assert!(
        issued_at.len() == 20 && issued_at.ends_with('Z'),
        "{issued_at}"
    );
    let get = client
        .get(&manifest_url)
        .header("Accept", OCI_MANIFEST)
        .header(AUTHORIZATION, bearer(&anonymous));
    assert_eq!(status_of(get).await, StatusCode::OK);
    let put = client
        .put(format!("{}/v2/smoke/policy/manifests/v2", registry.url()))
        .header("Content-Type", OCI_MANIFEST)
        .header(AUTHORIZATION, bearer(&anonymous))
        .body(image.manifest.clone());
    assert_eq!(status_of(put).await, StatusCode::UNAUTHORIZED);

    // Wrong password: refused.
    let (status, _) = fetch_token(
        &tokens,
        Some(("bob", "wrong")),
        &["repository:smoke/policy:pull"],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The OAuth2 refresh form (Docker identity tokens) gets the user's rights.
    let form = format!(
        "grant_type=refresh_token&refresh_token=identity-token-123&service={}&scope={}",
        tokens.service(),
        "repository%3Asmoke%2Fpolicy%3Apull%2Cpush"
    );
    let response = client
        .post(tokens.realm())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let put = client
        .put(format!("{}/v2/smoke/policy/manifests/v2", registry.url()))
        .header("Content-Type", OCI_MANIFEST)
        .header(
            AUTHORIZATION,
            format!("Bearer {}", refreshed["access_token"].as_str().unwrap()),
        )
        .body(image.manifest.clone());
    assert_eq!(status_of(put).await, StatusCode::CREATED);
    let bad = client
        .post(tokens.realm())
        .body(format!(
            "grant_type=refresh_token&refresh_token=stale&service={}",
            tokens.service()
        ))
        .header("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(status_of(bad).await, StatusCode::UNAUTHORIZED);

    let requests = tokens.requests();
    type Summary = (String, bool, Option<String>, u16, Vec<String>);
    let summary: Vec<Summary> = requests
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.basic_auth,
                r.user.clone(),
                r.status,
                r.granted.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "GET".to_string(),
                false,
                None,
                200,
                vec![
                    "repository:smoke/policy:pull".to_string(),
                    "repository:other:pull".to_string()
                ]
            ),
            ("GET".to_string(), true, None, 401, vec![]),
            (
                "POST".to_string(),
                false,
                Some("bob".to_string()),
                200,
                vec!["repository:smoke/policy:pull,push".to_string()]
            ),
            ("POST".to_string(), false, None, 401, vec![]),
        ]
    );
    // A token whose `exp` is past the registry's 60 s leeway is refused by the registry.
    tokens.set_token_lifetime(Some(-120));
    let (status, expired) = fetch_token(&tokens, None, &["repository:smoke/policy:pull"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(expired["expires_in"], 42);
    let get = client
        .get(&manifest_url)
        .header("Accept", OCI_MANIFEST)
        .header(AUTHORIZATION, bearer(&expired));
    assert_eq!(status_of(get).await, StatusCode::UNAUTHORIZED);

    assert_eq!(
        requests[0].scopes,
        ["repository:smoke/policy:pull,push", "repository:other:pull"]
    );
    assert_eq!(requests[2].grant_type.as_deref(), Some("refresh_token"));
}

#[tokio::test]
async fn a_tls_registry_serves_a_certificate_the_generated_ca_verifies() {
    let pki = Pki::generate();
    let registry =
        Registry::start(RegistryOptions::anonymous().with_tls(&pki.server_cert, &pki.server_key));
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let client = https_client(&pki.ca_pem());
    assert_eq!(
        status_of(client.get(format!("{}/v2/", registry.url()))).await,
        StatusCode::OK
    );
    // A client without the CA refuses the certificate.
    assert!(http_client()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await
        .is_err());

    let image = TestImage::generate(6, &[32 * KIB]);
    Pusher::with_client(&registry.url(), client)
        .push_image("smoke/tls", &image, Some("direct"))
        .await;
    let index = TestIndex::generate(6, &[KIB]);
    let options = SkopeoOptions::new().with_cert_dir(&pki.ca_dir);
    let reference = format!("{}/smoke/tls:skopeo", registry.host());
    skopeo_push(Artifact::Index(&index), &reference, &options).await;
    assert_eq!(
        skopeo_inspect_raw(&reference, &options).await,
        index.manifest
    );
    let direct = format!("{}/smoke/tls:direct", registry.host());
    assert_eq!(skopeo_inspect_raw(&direct, &options).await, image.manifest);
}

#[tokio::test]
async fn the_proxy_streams_big_blobs_both_ways_rewrites_locations_and_counts_requests() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let image = TestImage::generate(10, &[3 * MIB, 10]);
    let pusher = Pusher::new(&proxy.url());
    pusher.push_image("smoke/proxy", &image, Some("v1")).await;
    assert_eq!(proxy.blob_uploads(), 2 * image.blobs().len());
    assert_eq!(proxy.manifest_puts(), 1);
    assert_eq!(proxy.count("POST"), image.blobs().len());
    assert!(proxy
        .requests()
        .iter()
        .all(|r| !r.authorization && r.fault.is_none()));

    // Upload Locations point at the proxy, not at the registry.
    let client = http_client();
    let start = client
        .post(format!("{}/v2/smoke/proxy/blobs/uploads/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let location = start.headers()[LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/v2/smoke/proxy/blobs/uploads/", proxy.url())),
        "{location}"
    );
    assert!(start.headers().contains_key("docker-upload-uuid"));

    // A chunked upload (no Content-Length, as a streaming client sends it) gets through too.
    let layer = image.layers[0].data.clone();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..layer.len())
        .step_by(64 * KIB)
        .map(|at| Ok(layer.slice(at..(at + 64 * KIB).min(layer.len()))))
        .collect();
    let put = client
        .put(format!("{location}&digest={}", image.layers[0].digest))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    assert_eq!(status_of(put).await, StatusCode::CREATED);

    proxy.clear();
    let layer = &image.layers[0];
    let blob_url = format!("{}/v2/smoke/proxy/blobs/{}", proxy.url(), layer.digest);
    let head = client
        .head(&blob_url)
        .header(AUTHORIZATION, "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()[CONTENT_LENGTH],
        layer.data.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["docker-content-digest"],
        layer.digest.as_str()
    );
    let body = client
        .get(&blob_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 3 * MIB);
    assert_eq!(sha256_digest(&body), layer.digest);
    assert_eq!((proxy.blob_heads(), proxy.blob_gets()), (1, 1));
    let records = proxy.requests();
    assert!(records[0].authorization && !records[1].authorization);
    assert_eq!(
        records[1].path,
        format!("/v2/smoke/proxy/blobs/{}", layer.digest)
    );
    assert_eq!(
        proxy.counts_by_method().into_iter().collect::<Vec<_>>(),
        [("GET".to_string(), 1), ("HEAD".to_string(), 1)]
    );

    // Link headers pass through (distribution 2.8 paginates only the catalog, with a relative
    // Link; it ignores `n` and `last` on tags/list).
    pusher.push_image("smoke/proxy-2", &image, Some("v1")).await;
    let page = client
        .get(format!("{}/v2/_catalog?n=1", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["link"],
        "</v2/_catalog?last=smoke%2Fproxy&n=1>; rel=\"next\""
    );
}

#[tokio::test]
async fn the_proxy_answers_injected_statuses_without_forwarding_and_only_to_matching_requests() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let image = TestImage::generate(11, &[10]);
    Pusher::new(&registry.url())
        .push_image("smoke/faults", &image, Some("v1"))
        .await;
    let client = http_client();
    let manifest_url = format!("{}/v2/smoke/faults/manifests/v1", proxy.url());
    let get = || client.get(&manifest_url).header("Accept", OCI_MANIFEST);

    proxy.inject(
        Fault::status(503)
            .on("GET")
            .path_contains("/manifests/")
            .times(2),
    );
    proxy.inject(Fault::too_many_requests_after_seconds(7).on("HEAD"));
    let until = SystemTime::now() + Duration::from_secs(120);
    proxy.inject(Fault::too_many_requests_until(until).on("HEAD"));
    assert_eq!(proxy.pending_faults(), 4);

    // A request that matches no fault goes through.
    assert_eq!(
        status_of(client.get(format!("{}/v2/", proxy.url()))).await,
        StatusCode::OK
    );
    let first = get().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(first.text().await.unwrap().contains("UNAVAILABLE"));
    assert_eq!(status_of(get()).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status_of(get()).await, StatusCode::OK);

    let head = || client.head(&manifest_url).header("Accept", OCI_MANIFEST);
    let limited = head().send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    let limited = head().send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let date = limited.headers()["retry-after"].to_str().unwrap();
    let parsed = httpdate::parse_http_date(date).unwrap();
    let wanted = until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        parsed
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        wanted
    );
    assert_eq!(status_of(head()).await, StatusCode::OK);
    assert_eq!(proxy.pending_faults(), 0);

    let statuses: Vec<(String, u16, bool)> = proxy
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status, r.fault.is_some()))
        .collect();
    let expected = [
        ("GET", 200, false),
        ("GET", 503, true),
        ("GET", 503, true),
        ("GET", 200, false),
        ("HEAD", 429, true),
        ("HEAD", 429, true),
        ("HEAD", 200, false),
    ];
    let expected: Vec<(String, u16, bool)> = expected
        .iter()
        .map(|(m, s, f)| (m.to_string(), *s, *f))
        .collect();
    assert_eq!(statuses, expected);
}

#[tokio::test]
async fn the_proxy_aborts_a_response_body_midway() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let image = TestImage::generate(12, &[MIB]);
    Pusher::new(&registry.url())
        .push_image("smoke/abort", &image, Some("v1"))
        .await;
    let layer = &image.layers[0];
    let url = format!("{}/v2/smoke/abort/blobs/{}", proxy.url(), layer.digest);
    proxy.inject(Fault::abort_body_after(100 * 1024).path_contains("/blobs/"));

    let response = http_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(MIB as u64));
    let mut stream = response.bytes_stream();
    let mut received = 0;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the body must end in an error, got {received} bytes"
    );
    assert!(received > 0 && received <= 100 * 1024, "{received}");
    assert!(matches!(
        proxy.requests()[0].fault,
        Some(FaultAction::AbortBody {
            after_bytes: 102_400
        })
    ));

    // The next request is whole again.
    let body = http_client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&body), layer.digest);
}

#[tokio::test]
async fn the_proxy_corrupts_one_byte_of_a_body_and_keeps_its_length() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let image = TestImage::generate(13, &[200 * KIB]);
    Pusher::new(&registry.url())
        .push_image("smoke/corrupt", &image, Some("v1"))
        .await;
    let layer = &image.layers[0];
    let url = format!("{}/v2/smoke/corrupt/blobs/{}", proxy.url(), layer.digest);

    proxy.inject(Fault::corrupt_byte().on("GET"));
    let body = http_client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), layer.data.len());
    let differing: Vec<usize> = (0..body.len())
        .filter(|&i| body[i] != layer.data[i])
        .collect();
    assert_eq!(differing, [layer.data.len() / 2]);
    assert_ne!(sha256_digest(&body), layer.digest);

    proxy.inject(Fault::corrupt_byte_at(0).path_contains("/manifests/"));
    let (manifest, _) = Pusher::new(&proxy.url())
        .get_manifest("smoke/corrupt", "v1")
        .await;
    assert_eq!(manifest.len(), image.manifest.len());
    assert_eq!(manifest[0], !image.manifest[0]);
    assert_eq!(manifest[1..], image.manifest[1..]);
}

#[tokio::test]
async fn the_proxy_redirects_to_another_proxy_and_credentials_do_not_follow_across_hosts() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let front = FaultProxy::start(registry.addr);
    let other = FaultProxy::start(registry.addr);
    let image = TestImage::generate(14, &[1000]);
    Pusher::new(&registry.url())
        .push_image("smoke/redirect", &image, Some("v1"))
        .await;
    let layer = &image.layers[0];
    let path = format!("/v2/smoke/redirect/blobs/{}", layer.digest);

    // Seen raw: a 307 whose Location is the other proxy with the same path.
    front.inject(Fault::redirect_to_base(&other.url()).path_contains("/blobs/"));
    let response = http_client()
        .get(format!("{}{path}", front.url()))
        .header(AUTHORIZATION, "Bearer secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        response.headers()[LOCATION],
        format!("{}{path}", other.url()).as_str()
    );

    // A redirect-following client reaches the blob there, without the Authorization header.
    front.inject(Fault::redirect_to_base(&other.url()).path_contains("/blobs/"));
    let following = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = following
        .get(format!("{}{path}", front.url()))
        .header(AUTHORIZATION, "Bearer secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        sha256_digest(&response.bytes().await.unwrap()),
        layer.digest
    );
    let front_records = front.requests();
    assert_eq!(front_records.len(), 2);
    assert!(front_records
        .iter()
        .all(|r| r.authorization && r.status == 307));
    let other_records = other.requests();
    assert_eq!(other_records.len(), 1);
    assert!(!other_records[0].authorization);
    assert_eq!(other_records[0].path, path);
}

#[tokio::test]
async fn put_tags_creates_300_tags() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let image = TestImage::generate(15, &[10]);
    Pusher::new(&registry.url())
        .push_image("smoke/tags", &image, None)
        .await;
    let tags: Vec<String> = (0..300).map(|i| format!("1.0.{i}")).collect();
    let retries = put_tags(
        &registry.url(),
        "smoke/tags",
        &image.manifest,
        OCI_MANIFEST,
        &tags,
        8,
    )
    .await;

    let response = http_client()
        .get(format!("{}/v2/smoke/tags/tags/list?n=1000", registry.url()))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let mut listed: Vec<String> = list["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected = tags.clone();
    expected.sort();
    assert_eq!(listed, expected, "{retries} retries");
}

/// One POST the webhook receiver got.
#[derive(Clone, Debug)]
struct ReceivedPost {
    path: String,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

type Received = Arc<Mutex<Vec<ReceivedPost>>>;

/// A webhook receiver on its own thread: records every POST (any path) and answers 200.
fn webhook_receiver() -> (BackgroundServer, Received) {
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    let received = Received::default();
    let state = received.clone();
    let server = BackgroundServer::spawn("webhook-receiver", move |_| {
        axum::Router::new()
            .fallback(
                |State(state): State<Received>,
                 method: Method,
                 uri: Uri,
                 headers: HeaderMap,
                 body: bytes::Bytes| async move {
                    if method != Method::POST {
                        return StatusCode::METHOD_NOT_ALLOWED;
                    }
                    state.lock().expect("receiver lock").push(ReceivedPost {
                        path: uri.path().to_string(),
                        headers,
                        body,
                    });
                    StatusCode::OK
                },
            )
            .with_state(state)
    });
    (server, received)
}

/// The structure of a JSON value: one `path: type` entry per leaf, array elements merged as
/// `[]`. Two payloads with the same fields of the same types have the same shape.
fn json_shape(value: &serde_json::Value) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, path: String, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                out.insert(format!("{path}: object"));
                for (key, child) in map {
                    walk(child, format!("{path}.{key}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                out.insert(format!("{path}: array"));
                for item in items {
                    walk(item, format!("{path}[]"), out);
                }
            }
            serde_json::Value::String(_) => drop(out.insert(format!("{path}: string"))),
            serde_json::Value::Number(_) => drop(out.insert(format!("{path}: number"))),
            serde_json::Value::Bool(_) => drop(out.insert(format!("{path}: bool"))),
            serde_json::Value::Null => drop(out.insert(format!("{path}: null"))),
        }
    }
    let mut out = BTreeSet::new();
    walk(value, String::new(), &mut out);
    out
}

/// A body recorded from the real registry by this test, a fixture for webhook tests.
const DISTRIBUTION_WEBHOOK_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/webhooks/distribution-registry-2.8.json"
);

/// Also checks that the recorded fixture still has the shape of a live event. To record it
/// again: `RETAGD_RECORD_WEBHOOK_FIXTURE=1 cargo test --test it harness::a_registry_with_notifications`.
#[tokio::test]
async fn a_registry_with_notifications_posts_a_push_event_with_the_bearer_token() {
    let (receiver, received) = webhook_receiver();
    let bearer = "n0tify-s3cret";
    let registry = Registry::start(
        RegistryOptions::anonymous()
            .with_notifications(&format!("http://{}/events", receiver.addr), bearer),
    );
    assert!(
        registry.log().contains("configuring endpoint retagd"),
        "{}",
        registry.log()
    );

    let image = TestImage::generate(20, &[100, 200]);
    Pusher::new(&registry.url())
        .push_image("smoke/notify", &image, Some("v1"))
        .await;
    let is_push_of_v1 = |post: &ReceivedPost| {
        let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap_or_default();
        body["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["action"] == "push" && e["target"]["tag"] == "v1")
        })
    };
    let post = poll_until(
        "the push event of smoke/notify:v1",
        STARTUP_DEADLINE,
        || {
            let found = received
                .lock()
                .unwrap()
                .iter()
                .find(|post| is_push_of_v1(post))
                .cloned();
            async move { found }
        },
    )
    .await;

    assert_eq!(post.path, "/events");
    assert_eq!(
        post.headers[AUTHORIZATION],
        format!("Bearer {bearer}").as_str()
    );
    assert_eq!(
        post.headers[CONTENT_TYPE],
        "application/vnd.docker.distribution.events.v1+json"
    );
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    // One event per POST: distribution queues and sends each event on its own.
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body:#}");
    let event = &events[0];
    assert_eq!(event["action"], "push");
    let target = &event["target"];
    assert_eq!(target["repository"], "smoke/notify");
    assert_eq!(target["tag"], "v1");
    assert_eq!(target["digest"], image.digest.as_str());
    assert_eq!(target["mediaType"], OCI_MANIFEST);
    assert_eq!(target["size"], image.manifest.len());
    // `includereferences`: the config and the layers.
    let references: Vec<&str> = target["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    let blobs: Vec<&str> = image.blobs().iter().map(|b| b.digest.as_str()).collect();
    assert_eq!(references, blobs);
    assert_eq!(event["request"]["method"], "PUT");
    // The blob pushes came first and events go out one after another in queue order, so any
    // blob event would have arrived by now: `ignoredmediatypes` dropped them.
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "{:#?}",
        received.lock().unwrap()
    );

    if std::env::var_os("RETAGD_RECORD_WEBHOOK_FIXTURE").is_some() {
        std::fs::write(DISTRIBUTION_WEBHOOK_FIXTURE, &post.body).unwrap();
    }
    let fixture = std::fs::read(DISTRIBUTION_WEBHOOK_FIXTURE).unwrap();
    let fixture: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
    assert_eq!(json_shape(&fixture), json_shape(&body));
}

/// The text a fake exporter serves in the Prometheus smoke test.
const EXPOSITION: &str = "# HELP x_test A test.\n# TYPE x_test gauge\nx_test{a=\"b\"} 42\n";

/// Serves [`EXPOSITION`] at `/metrics` on its own thread.
fn fake_exporter() -> BackgroundServer {
    BackgroundServer::spawn("fake-exporter", |_| {
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    EXPOSITION,
                )
            }),
        )
    })
}

#[tokio::test]
async fn prometheus_scrapes_a_target_and_answers_a_query_for_its_series() {
    let exporter = fake_exporter();
    let started = Instant::now();
    let prometheus = Prometheus::start(&[exporter.addr]);
    let ready = started.elapsed();
    assert_ne!(prometheus.addr.port(), 0);
    assert_eq!(prometheus.url(), format!("http://{}", prometheus.addr));
    prometheus.wait_for_target_up().await;
    let up = started.elapsed();

    let series = poll_until("x_test in Prometheus", STARTUP_DEADLINE, || async {
        let result = prometheus.query("x_test").await;
        (result.as_array().map_or(0, Vec::len) > 0).then_some(result)
    })
    .await;
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let metric = &series[0]["metric"];
    assert_eq!(metric["__name__"], "x_test");
    assert_eq!(metric["a"], "b");
    assert_eq!(metric["job"], "retagd");
    assert_eq!(metric["instance"], exporter.addr.to_string().as_str());
    assert_eq!(series[0]["value"][1], "42");
    eprintln!(
        "Prometheus ready after {ready:?}, target up after {up:?}, queried after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn prometheus_moves_to_another_port_when_the_picked_one_is_taken() {
    // The exporter holds a port; Prometheus is told to try it first, exits with "address
    // already in use" (and the exporter answers /-/ready with 404 meanwhile), and comes up on a
    // new port.
    let exporter = fake_exporter();
    let prometheus = Prometheus::start_trying_port_first(&[exporter.addr], exporter.addr.port());
    assert_ne!(prometheus.addr, exporter.addr);
    let ready = http_client()
        .get(format!("{}/-/ready", prometheus.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[test]
fn promtool_reports_a_counter_without_total_and_nothing_for_a_clean_exposition() {
    let report = promtool_check_metrics("# HELP jobs Jobs done.\n# TYPE jobs counter\njobs 3\n");
    assert!(
        report.contains(r#"jobs counter metrics should have "_total" suffix"#),
        "{report}"
    );
    let clean = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 3\n";
    assert_eq!(promtool_check_metrics(clean), "");
    assert_eq!(promtool_check_metrics(EXPOSITION), "");
    let broken = promtool_check_metrics("jobs{ 3\n");
    assert!(broken.contains("error while linting"), "{broken}");
}
