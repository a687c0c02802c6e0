//! The registry client against real CNCF registries (`docker-registry` 2.8) with no auth,
//! htpasswd, token auth and TLS, through our counting and fault-injecting proxy.
//!
//! Request counts are read at the proxy, i.e. on the wire, independently of the client's own
//! observer (which is checked against them once).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use retagd::config;
use retagd::reference::Reference;
use retagd::registry::{self, Error, Observer, Registries, RetryReason};
use support::config::{Config, Pipeline, Stage};
use support::images::{put_tags, skopeo_inspect_raw, Pusher, SkopeoOptions, TestImage, TestIndex};
use support::pki::Pki;
use support::proxy::{Fault, FaultAction, FaultProxy, ProxyRequest, TagPaging};
use support::registry::{Registry, RegistryOptions};
use support::token::{TokenServer, TokenServerOptions};

const MIB: usize = 1024 * 1024;

/// Records what the client reports through the observer hook.
#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<(String, Option<u16>)>>,
    retries: Mutex<Vec<(RetryReason, Duration)>>,
    remaining: Mutex<Option<u64>>,
}

impl Observer for Recorder {
    fn request(&self, _: &str, method: &str, status: Option<u16>, _: Duration) {
        self.requests
            .lock()
            .unwrap()
            .push((method.to_string(), status));
    }

    fn retry(&self, _: &str, reason: RetryReason, delay: Duration) {
        self.retries.lock().unwrap().push((reason, delay));
    }

    fn rate_limit_remaining(&self, _: &str, remaining: u64) {
        *self.remaining.lock().unwrap() = Some(remaining);
    }
}

fn settings(name: &str, url: &str, auth: config::Auth) -> config::Registry {
    config::Registry {
        name: name.to_string(),
        url: url.parse().unwrap(),
        auth,
        ca_file: None,
        max_concurrency: config::DEFAULT_MAX_CONCURRENCY,
        requests_per_second: None,
        page_size: config::DEFAULT_PAGE_SIZE,
        request_timeout: config::DEFAULT_REQUEST_TIMEOUT,
    }
}

fn clients(list: Vec<config::Registry>, observer: Arc<dyn Observer>) -> Registries {
    let map: BTreeMap<String, config::Registry> =
        list.into_iter().map(|r| (r.name.clone(), r)).collect();
    Registries::new(&map, None, observer).unwrap()
}

fn reference(text: &str) -> Reference {
    text.parse().unwrap()
}

/// Copies `src` to `dst`, both references on hosts known to `registries`.
async fn copy(registries: &Registries, src: &str, dst: &str) -> Result<registry::Report, Error> {
    let (src, dst) = (reference(src), reference(dst));
    let from = registries.for_host(&src.registry)?;
    let to = registries.for_host(&dst.registry)?;
    registry::copy(&from, &src, &to, &dst, true).await
}

/// An anonymous registry behind a proxy, and clients that go through the proxy.
struct Anonymous {
    registry: Registry,
    proxy: FaultProxy,
    recorder: Arc<Recorder>,
    clients: Registries,
}

impl Anonymous {
    fn start() -> Anonymous {
        let registry = Registry::start(RegistryOptions::anonymous());
        let proxy = FaultProxy::start(registry.addr);
        let recorder = Arc::new(Recorder::default());
        let clients = clients(
            vec![settings("local", &proxy.url(), config::Auth::Anonymous)],
            recorder.clone(),
        );
        Anonymous {
            registry,
            proxy,
            recorder,
            clients,
        }
    }

    /// `PROXYHOST/rest`.
    fn at(&self, rest: &str) -> String {
        format!("{}/{rest}", self.proxy.host())
    }
}

/// The bytes under `reference` read by skopeo, which knows nothing of retagd.
async fn raw(registry: &Registry, rest: &str) -> Vec<u8> {
    skopeo_inspect_raw(
        &format!("{}/{rest}", registry.host()),
        &SkopeoOptions::new(),
    )
    .await
}

fn requests_summary(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

#[tokio::test]
async fn a_same_repository_copy_is_one_head_one_get_one_put_and_touches_no_blob() {
    let env = Anonymous::start();
    let image = TestImage::generate(1, &[4096, 100]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1.2.0-dev.3"))
        .await;

    let report = copy(
        &env.clients,
        &env.at("team/app:v1.2.0-dev.3"),
        &env.at("team/app:v1.2.0-rc.1"),
    )
    .await
    .unwrap();
    assert_eq!(report.path, registry::Path::SameRepository);
    assert!(!report.up_to_date);
    assert_eq!(report.digest.as_str(), image.digest);
    let seen = requests_summary(&env.proxy);
    assert_eq!(
        seen,
        [
            "HEAD /v2/team/app/manifests/v1.2.0-rc.1 404",
            "GET /v2/team/app/manifests/v1.2.0-dev.3 200",
            "PUT /v2/team/app/manifests/v1.2.0-rc.1 201",
        ],
        "{seen:#?}"
    );
    assert_eq!(
        raw(&env.registry, "team/app:v1.2.0-rc.1").await,
        image.manifest
    );

    // The observer hook saw exactly what crossed the wire.
    let observed = env.recorder.requests.lock().unwrap().clone();
    let wire: Vec<(String, Option<u16>)> = env
        .proxy
        .requests()
        .iter()
        .map(|r| (r.method.clone(), Some(r.status)))
        .collect();
    assert_eq!(observed, wire);

    // Again: the destination has the digest, so two HEADs and no GET (a pull on Docker Hub) or PUT.
    env.proxy.clear();
    let again = copy(
        &env.clients,
        &env.at("team/app:v1.2.0-dev.3"),
        &env.at("team/app:v1.2.0-rc.1"),
    )
    .await
    .unwrap();
    assert!(again.up_to_date);
    assert_eq!(
        env.proxy.manifest_heads(),
        2,
        "{:#?}",
        requests_summary(&env.proxy)
    );
    assert_eq!(env.proxy.requests().len(), 2);

    // A destination written TAG@DIGEST is about the tag: it is created, not found "up to date"
    // because the digest already exists.
    let pinned = env.at(&format!("team/app:stable@{}", image.digest));
    let report = copy(&env.clients, &env.at("team/app:v1.2.0-dev.3"), &pinned)
        .await
        .unwrap();
    assert!(!report.up_to_date);
    assert_eq!(raw(&env.registry, "team/app:stable").await, image.manifest);

    // By digest, an up-to-date destination costs one HEAD.
    env.proxy.clear();
    let by_digest = env.at(&format!("team/app@{}", image.digest));
    let again = copy(&env.clients, &by_digest, &env.at("team/app:v1.2.0-rc.1"))
        .await
        .unwrap();
    assert!(again.up_to_date);
    assert_eq!(requests_summary(&env.proxy).len(), 1);
}

#[tokio::test]
async fn a_mounted_copy_of_a_two_platform_index_moves_no_blob_bytes() {
    let env = Anonymous::start();
    let index = TestIndex::generate(2, &[64 * 1024, 10]);
    Pusher::new(&env.registry.url())
        .push_index("team/app", &index, Some("v2.0.0-rc.1"))
        .await;
    let blobs: BTreeSet<&str> = index
        .children
        .iter()
        .flat_map(|c| c.blobs())
        .map(|b| b.digest.as_str())
        .collect();

    let report = copy(
        &env.clients,
        &env.at("team/app:v2.0.0-rc.1"),
        &env.at("prod/app:v2.0.0"),
    )
    .await
    .unwrap();
    assert_eq!(report.path, registry::Path::Mount);
    assert_eq!(report.digest.as_str(), index.digest);
    assert_eq!(
        (
            report.blobs_mounted,
            report.blobs_uploaded,
            report.manifests_pushed
        ),
        (blobs.len(), 0, 3)
    );
    let seen = requests_summary(&env.proxy);
    assert_eq!(env.proxy.blob_gets(), 0, "{seen:#?}");
    let mounts = env
        .proxy
        .count_where(|r| r.method == "POST" && r.path.contains("mount=") && r.status == 201);
    assert_eq!(mounts, blobs.len(), "{seen:#?}");
    assert_eq!(
        env.proxy.blob_uploads(),
        blobs.len(),
        "only the mount POSTs: {seen:#?}"
    );
    // 1 HEAD (destination), 3 GETs (root and children), mounts, 3 PUTs (children, then root).
    assert_eq!(seen.len(), 1 + 3 + blobs.len() + 3, "{seen:#?}");
    assert!(seen
        .last()
        .unwrap()
        .starts_with("PUT /v2/prod/app/manifests/v2.0.0 "));

    assert_eq!(raw(&env.registry, "prod/app:v2.0.0").await, index.manifest);

    // A registry that keeps failing blob POSTs gets the retry budget once per blob, not
    // retries of retries.
    env.proxy.clear();
    env.proxy.inject(Fault::status(503).on("POST").times(1000));
    let one_blob = TestImage::generate(20, &[]);
    Pusher::new(&env.registry.url())
        .push_image("team/one", &one_blob, Some("v1"))
        .await;
    let error = copy(&env.clients, &env.at("team/one:v1"), &env.at("prod/one:v1"))
        .await
        .unwrap_err();
    assert_eq!(
        env.proxy.count("POST"),
        5,
        "{:#?}",
        requests_summary(&env.proxy)
    );
    assert!(
        error.to_string().contains("gave up after 5 attempts"),
        "{error}"
    );
    env.proxy.clear_faults();
    for child in &index.children {
        let child_ref = format!("prod/app@{}", child.digest);
        assert_eq!(raw(&env.registry, &child_ref).await, child.manifest);
    }
}

#[tokio::test]
async fn refused_mounts_fall_back_to_uploads() {
    let env = Anonymous::start();
    let image = TestImage::generate(15, &[70_000, 10]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    let (config, layer) = (&image.config.digest, &image.layers[0].digest);
    // The registry itself refuses one mount (202 and an open session: the source repository
    // named in `from` lacks the blob); a Harbor-style 404 refuses the other.
    env.proxy.inject(
        Fault::rewrite("from=team%2Fapp", "from=nowhere%2Fapp")
            .on("POST")
            .path_contains(&format!("mount={}", layer.replace(':', "%3A"))),
    );
    env.proxy.inject(
        Fault::status(404)
            .on("POST")
            .path_contains(&format!("mount={}", config.replace(':', "%3A"))),
    );
    let report = copy(&env.clients, &env.at("team/app:v1"), &env.at("prod/app:v1"))
        .await
        .unwrap();
    assert_eq!(
        env.proxy.pending_faults(),
        0,
        "{:#?}",
        requests_summary(&env.proxy)
    );
    assert_eq!((report.blobs_mounted, report.blobs_uploaded), (1, 2));
    assert_eq!(
        report.bytes_uploaded,
        70_000 + image.config.data.len() as u64
    );
    let seen = requests_summary(&env.proxy);
    // The layer went into the session the refused mount opened: no second POST for it.
    let posts = env.proxy.count_where(|r| r.method == "POST");
    assert_eq!(
        posts, 4,
        "three mounts, one fresh session after the 404: {seen:#?}"
    );
    assert_eq!(env.proxy.blob_gets(), 2, "{seen:#?}");
    assert_eq!(raw(&env.registry, "prod/app:v1").await, image.manifest);
}

#[tokio::test]
async fn a_cross_registry_copy_streams_only_missing_blobs() {
    let source = Anonymous::start();
    let target = Registry::start(RegistryOptions::anonymous());
    let target_proxy = FaultProxy::start(target.addr);
    let index = TestIndex::generate(3, &[3 * MIB, 1000]);
    Pusher::new(&source.registry.url())
        .push_index("team/app", &index, Some("v3.0.0"))
        .await;
    let blobs: BTreeMap<&str, usize> = index
        .children
        .iter()
        .flat_map(|c| c.blobs())
        .map(|b| (b.digest.as_str(), b.data.len()))
        .collect();
    let clients = clients(
        vec![
            settings("dev", &source.proxy.url(), config::Auth::Anonymous),
            settings("prod", &target_proxy.url(), config::Auth::Anonymous),
        ],
        Arc::new(registry::NoObserver),
    );
    let dst = format!("{}/app:v3.0.0", target_proxy.host());

    let report = copy(&clients, &source.at("team/app:v3.0.0"), &dst)
        .await
        .unwrap();
    assert_eq!(report.path, registry::Path::Transfer);
    assert_eq!(report.blobs_uploaded, blobs.len());
    assert_eq!(report.bytes_uploaded, blobs.values().sum::<usize>() as u64);
    assert_eq!(source.proxy.blob_gets(), blobs.len());
    assert_eq!(target_proxy.blob_heads(), blobs.len());
    // One POST and one monolithic PUT per blob.
    assert_eq!(target_proxy.blob_uploads(), 2 * blobs.len());
    assert_eq!(raw(&target, "app:v3.0.0").await, index.manifest);

    // Another tag in the same repository: every blob is already there.
    source.proxy.clear();
    target_proxy.clear();
    let dst2 = format!("{}/app:stable", target_proxy.host());
    let report = copy(&clients, &source.at("team/app:v3.0.0"), &dst2)
        .await
        .unwrap();
    assert_eq!(
        (report.blobs_present, report.blobs_uploaded),
        (blobs.len(), 0)
    );
    assert_eq!(
        (source.proxy.blob_gets(), target_proxy.blob_uploads()),
        (0, 0)
    );
    assert_eq!(raw(&target, "app:stable").await, index.manifest);
}

#[tokio::test]
async fn tag_lists_follow_link_pages_and_refuse_links_to_other_hosts() {
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let image = TestImage::generate(4, &[10]);
    Pusher::new(&registry.url())
        .push_image("big/app", &image, Some("seed"))
        .await;
    let tags: Vec<String> = (0..2_500).map(|i| format!("v1.0.{i}")).collect();
    put_tags(
        &registry.url(),
        "big/app",
        &image.manifest,
        support::images::OCI_MANIFEST,
        &tags,
        8,
    )
    .await;

    proxy.page_tags(Some(TagPaging::default()));
    let mut paged = settings("local", &proxy.url(), config::Auth::Anonymous);
    paged.page_size = 100;
    let clients = clients(vec![paged], Arc::new(registry::NoObserver));
    let client = clients.get("local").unwrap();
    let list = client.list_tags("big/app").await.unwrap();
    let mut expected: Vec<String> = tags.clone();
    expected.push("seed".into());
    expected.sort();
    let mut got = list.tags.clone();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(list.pages, 26);
    let pages = proxy.count_where(|r| r.path.contains("/tags/list"));
    assert_eq!(pages, 26);
    assert!(proxy.requests().iter().all(|r| r.path.contains("n=100")));

    proxy.page_tags(Some(TagPaging {
        link_origin: Some("http://127.0.0.2:9".into()),
    }));
    let error = client.list_tags("big/app").await.unwrap_err().to_string();
    assert!(
        error.contains("Link to another origin (127.0.0.2) refused"),
        "{error}"
    );
}

#[tokio::test]
async fn basic_auth_uses_the_password_file_and_reports_refusals_without_secrets() {
    let registry = Registry::start(RegistryOptions::htpasswd("ci", "s3cret-pw"));
    let image = TestImage::generate(5, &[2048]);
    Pusher::new(&registry.url())
        .basic_auth("ci", "s3cret-pw")
        .push_image("team/app", &image, Some("v1"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let auth = config::Auth::Password {
        username: "ci".into(),
        password_file: password_file.clone(),
    };
    let good = clients(
        vec![settings("local", &registry.url(), auth)],
        Arc::new(registry::NoObserver),
    );
    let at = |rest: &str| format!("{}/{rest}", registry.host());
    let report = copy(&good, &at("team/app:v1"), &at("prod/app:v1"))
        .await
        .unwrap();
    assert_eq!(report.blobs_mounted, 2);
    assert_eq!(
        raw_with(&registry, "prod/app:v1", Some(("ci", "s3cret-pw"))).await,
        image.manifest
    );

    std::fs::write(&password_file, "wrong-pw").unwrap();
    let auth = config::Auth::Password {
        username: "ci".into(),
        password_file: password_file.clone(),
    };
    let bad = clients(
        vec![settings("local", &registry.url(), auth)],
        Arc::new(registry::NoObserver),
    );
    let error = format!(
        "{:#}",
        anyhow::Error::new(
            copy(&bad, &at("team/app:v1"), &at("x/app:v1"))
                .await
                .unwrap_err()
        )
    );
    assert!(
        error.contains("refused the user name and password"),
        "{error}"
    );
    assert!(!error.contains("wrong-pw"), "{error}");
    // The password is rotated in place: the refusal made the client read the file again.
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    copy(&bad, &at("team/app:v1"), &at("x/app:v1"))
        .await
        .unwrap();

    let none = clients(
        vec![settings("local", &registry.url(), config::Auth::Anonymous)],
        Arc::new(registry::NoObserver),
    );
    let error = copy(&none, &at("team/app:v1"), &at("x/app:v1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("asks for a user name and password"),
        "{error}"
    );
}

async fn raw_with(registry: &Registry, rest: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    let mut options = SkopeoOptions::new();
    if let Some((user, password)) = creds {
        options = options.with_creds(user, password);
    }
    skopeo_inspect_raw(&format!("{}/{rest}", registry.host()), &options).await
}

fn password_file_of(dir: &Path) -> std::path::PathBuf {
    dir.join("password")
}

fn clients_with_password(proxy: &FaultProxy, user: &str, password_file: &Path) -> Registries {
    let auth = config::Auth::Password {
        username: user.into(),
        password_file: password_file.to_path_buf(),
    };
    clients(
        vec![settings("local", &proxy.url(), auth)],
        Arc::new(registry::NoObserver),
    )
}

/// A token from the token server as bob, for probing the registry directly.
async fn token_for(tokens: &TokenServer, scope: &str) -> String {
    let mut url = url::Url::parse(&tokens.realm()).unwrap();
    url.query_pairs_mut()
        .append_pair("service", &tokens.service())
        .append_pair("scope", scope);
    let body = support::http_client()
        .get(url)
        .basic_auth("bob", Some("hunter2"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    answer["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn token_auth_mounts_with_one_token_holding_pull_on_the_source() {
    let pki = Pki::generate();
    let tokens = TokenServer::start(TokenServerOptions::new(&pki).with_user("bob", "hunter2"));
    let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));
    let proxy = FaultProxy::start(registry.addr);
    let index = TestIndex::generate(6, &[1000]);
    let creds = SkopeoOptions::new().with_creds("bob", "hunter2");
    support::images::skopeo_push(
        (&index).into(),
        &format!("{}/team/app:v1", registry.host()),
        &creds,
    )
    .await;
    tokens.clear();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(password_file_of(dir.path()), "hunter2").unwrap();
    let clients = clients_with_password(&proxy, "bob", &password_file_of(dir.path()));
    let at = |rest: &str| format!("{}/{rest}", proxy.host());
    let report = copy(&clients, &at("team/app:v1"), &at("prod/app:v1"))
        .await
        .unwrap();
    assert_eq!(report.blobs_mounted, 4, "mounts were granted, not refused");
    assert_eq!(proxy.blob_gets(), 0);
    let issued = tokens.requests();
    assert_eq!(issued.len(), 1, "one token for the whole copy: {issued:#?}");
    let scopes: BTreeSet<&str> = issued[0].scopes.iter().map(String::as_str).collect();
    assert_eq!(
        scopes,
        BTreeSet::from(["repository:prod/app:pull,push", "repository:team/app:pull"]),
        "the challenge's own pull scope merges into pull,push"
    );
    assert!(issued[0].basic_auth);
    // Only the first request went without a token.
    let unauthenticated = proxy.count_where(|r| !r.authorization);
    assert_eq!(unauthenticated, 1, "{:#?}", requests_summary(&proxy));
    assert_eq!(
        raw_with(&registry, "prod/app:v1", Some(("bob", "hunter2"))).await,
        index.manifest
    );

    // The token a client holds stops working in the middle of its work: the registry allows
    // 60 s of clock leeway, so a token whose exp is 59 s in the past dies about a second after
    // issue. The client gets a new one on the 401 and carries on.
    tokens.set_token_lifetime(Some(-59));
    let clients = clients_with_password(&proxy, "bob", &password_file_of(dir.path()));
    assert!(
        copy(&clients, &at("team/app:v1"), &at("prod/app:v1"))
            .await
            .unwrap()
            .up_to_date
    );
    let probe = token_for(&tokens, "repository:team/app:pull").await;
    support::poll_until(
        "the short-lived token to expire",
        Duration::from_secs(10),
        || {
            let probe = probe.clone();
            let url = format!("{}/v2/team/app/tags/list", registry.url());
            async move {
                let status = support::http_client()
                    .get(url)
                    .bearer_auth(probe)
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status == 401).then_some(())
            }
        },
    )
    .await;
    tokens.set_token_lifetime(None);
    tokens.clear();
    proxy.clear();
    let report = copy(&clients, &at("team/app:v1"), &at("prod/app:v1"))
        .await
        .unwrap();
    assert!(report.up_to_date);
    assert_eq!(
        proxy.count_where(|r| r.status == 401),
        1,
        "{:#?}",
        requests_summary(&proxy)
    );
    assert_eq!(tokens.requests().len(), 1);
}

#[tokio::test]
async fn an_identity_token_from_docker_config_uses_the_refresh_form() {
    let pki = Pki::generate();
    let tokens = TokenServer::start(
        TokenServerOptions::new(&pki)
            .with_user("bob", "hunter2")
            .with_refresh_token("refresh-me"),
    );
    let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));
    let image = TestImage::generate(7, &[100]);
    let creds = SkopeoOptions::new().with_creds("bob", "hunter2");
    support::images::skopeo_push(
        (&image).into(),
        &format!("{}/team/app:v1", registry.host()),
        &creds,
    )
    .await;
    tokens.clear();

    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    let config = serde_json::json!({"auths": {registry.host(): {"identitytoken": "refresh-me"}}});
    std::fs::write(&docker_config, config.to_string()).unwrap();
    let clients = clients(
        vec![settings(
            "local",
            &registry.url(),
            config::Auth::DockerConfig(docker_config),
        )],
        Arc::new(registry::NoObserver),
    );
    let at = |rest: &str| format!("{}/{rest}", registry.host());
    copy(&clients, &at("team/app:v1"), &at("team/app:v1-rc.1"))
        .await
        .unwrap();
    let issued = tokens.requests();
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0].method, "POST");
    assert_eq!(issued[0].grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(
        raw_with(&registry, "team/app:v1-rc.1", Some(("bob", "hunter2"))).await,
        image.manifest
    );
}

#[tokio::test]
async fn tls_registries_are_trusted_through_ca_file_and_refused_without_it() {
    let pki = Pki::generate();
    let registry =
        Registry::start(RegistryOptions::anonymous().with_tls(&pki.server_cert, &pki.server_key));
    let image = TestImage::generate(8, &[100]);
    Pusher::with_client(&registry.url(), support::https_client(&pki.ca_pem()))
        .push_image("team/app", &image, Some("v1"))
        .await;
    let mut trusted = settings("tls", &registry.url(), config::Auth::Anonymous);
    trusted.ca_file = Some(pki.ca_cert.clone());
    let clients_ok = clients(vec![trusted], Arc::new(registry::NoObserver));
    let at = |rest: &str| format!("{}/{rest}", registry.host());
    let report = copy(&clients_ok, &at("team/app:v1"), &at("team/app:v2"))
        .await
        .unwrap();
    assert_eq!(report.digest.as_str(), image.digest);

    let untrusted = clients(
        vec![settings("tls", &registry.url(), config::Auth::Anonymous)],
        Arc::new(registry::NoObserver),
    );
    let error = copy(&untrusted, &at("team/app:v1"), &at("team/app:v3"))
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(error));
    assert!(
        chain.contains("registry tls: HEAD /v2/team/app/manifests/v3"),
        "{chain}"
    );
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_honouring_retry_after() {
    let env = Anonymous::start();
    let image = TestImage::generate(9, &[100]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    // An HTTP date has whole seconds: two seconds ahead leaves at least one to wait.
    let until = SystemTime::now() + Duration::from_secs(2);
    env.proxy
        .inject(Fault::too_many_requests_until(until).on("HEAD"));
    env.proxy.inject(
        Fault::status(503)
            .on("GET")
            .path_contains("/manifests/")
            .times(2),
    );
    env.proxy.inject(
        Fault::too_many_requests_after_seconds(1)
            .on("PUT")
            .path_contains("/manifests/"),
    );

    copy(&env.clients, &env.at("team/app:v1"), &env.at("team/app:v2"))
        .await
        .unwrap();
    assert_eq!(raw(&env.registry, "team/app:v2").await, image.manifest);
    let retries: Vec<RetryReason> = env
        .recorder
        .retries
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        retries,
        [
            RetryReason::RateLimited,
            RetryReason::ServerError,
            RetryReason::ServerError,
            RetryReason::RateLimited
        ]
    );
    // Each 429's Retry-After was waited out before the next attempt.
    let seen = env.proxy.requests();
    let gap_after = |i: usize| seen[i + 1].at.duration_since(seen[i].at);
    let limited: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].status == 429).collect();
    assert_eq!(limited.len(), 2, "{:#?}", requests_summary(&env.proxy));
    assert!(
        gap_after(limited[0]) >= Duration::from_millis(900),
        "{:?}",
        gap_after(limited[0])
    );
    assert!(
        gap_after(limited[1]) >= Duration::from_millis(950),
        "{:?}",
        gap_after(limited[1])
    );
}

#[tokio::test]
async fn registry_errors_are_reported_with_code_and_message_and_not_retried() {
    let env = Anonymous::start();
    let image = TestImage::generate(10, &[100]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    let respond = |status: u16, body: &str| {
        Fault::new(FaultAction::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
        })
        .on("PUT")
    };
    env.proxy.inject(respond(
        400,
        r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag 'v2' already exists and cannot be overwritten because the repository is immutable."}]}"#,
    ));
    let error = copy(&env.clients, &env.at("team/app:v1"), &env.at("team/app:v2"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("registry local: PUT /v2/team/app/manifests/v2: HTTP 400 TAG_INVALID: The image tag 'v2' already exists"),
        "{error}"
    );
    assert!(!error.contains("attempts"), "not retried: {error}");

    env.proxy.inject(respond(
        412,
        "<html><body>\nPRECONDITION failed\n</body></html>",
    ));
    let error = copy(&env.clients, &env.at("team/app:v1"), &env.at("team/app:v2"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("HTTP 412: <html><body> PRECONDITION failed"),
        "{error}"
    );
    assert!(env.recorder.retries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_altered_manifest_is_refused_and_nothing_is_written() {
    let env = Anonymous::start();
    let image = TestImage::generate(11, &[100]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    env.proxy
        .inject(Fault::corrupt_byte().on("GET").path_contains("/manifests/"));
    let error = copy(&env.clients, &env.at("team/app:v1"), &env.at("prod/app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("expected {}", image.digest)),
        "{error}"
    );
    assert_eq!(env.proxy.manifest_puts() + env.proxy.blob_uploads(), 0);
    let client = env.clients.get("local").unwrap();
    assert_eq!(client.head_manifest("prod/app", "v1").await.unwrap(), None);
}

#[tokio::test]
async fn schema1_and_oversized_manifests_are_refused() {
    let env = Anonymous::start();
    let image = TestImage::generate(16, &[100]);
    Pusher::new(&env.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    let answer = |body: String, content_type: &str| {
        Fault::new(FaultAction::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        })
        .on("GET")
        .path_contains("/manifests/")
    };
    let schema1 = r#"{"schemaVersion":1,"name":"team/app","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    env.proxy.inject(answer(
        schema1.into(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ));
    let error = copy(&env.clients, &env.at("team/app:v1"), &env.at("prod/app:v1"))
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(error));
    assert!(
        chain.contains("schema 1 manifests are not supported"),
        "{chain}"
    );

    env.proxy.inject(answer(
        " ".repeat(5 * MIB),
        "application/vnd.oci.image.manifest.v1+json",
    ));
    let error = copy(&env.clients, &env.at("team/app:v1"), &env.at("prod/app:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { size: Some(s), .. } if s == 5 * MIB as u64),
        "{error}"
    );
    assert_eq!(env.proxy.manifest_puts() + env.proxy.blob_uploads(), 0);
}

#[tokio::test]
async fn an_altered_or_broken_blob_stream_never_completes_an_upload() {
    let source = Anonymous::start();
    let target = Registry::start(RegistryOptions::anonymous());
    let image = TestImage::generate(12, &[2 * MIB]);
    Pusher::new(&source.registry.url())
        .push_image("team/app", &image, Some("v1"))
        .await;
    let clients = clients(
        vec![
            settings("dev", &source.proxy.url(), config::Auth::Anonymous),
            settings("prod", &target.url(), config::Auth::Anonymous),
        ],
        Arc::new(registry::NoObserver),
    );
    let layer = &image.layers[0].digest;
    let dst = format!("{}/app:v1", target.host());
    let prod = clients.get("prod").unwrap();

    // A connection reset in the middle of the layer: the transfer is retried and succeeds.
    source.proxy.inject(
        Fault::abort_body_after(100_000)
            .on("GET")
            .path_contains(layer),
    );
    let report = copy(&clients, &source.at("team/app:v1"), &dst)
        .await
        .unwrap();
    assert_eq!(report.blobs_uploaded, 2);
    assert_eq!(
        source
            .proxy
            .count_where(|r| r.path.contains(layer.as_str())),
        2
    );
    assert_eq!(raw(&target, "app:v1").await, image.manifest);

    // One altered byte: refused, and neither the blob nor the manifest exists afterwards.
    source
        .proxy
        .inject(Fault::corrupt_byte().on("GET").path_contains(layer));
    let dst = format!("{}/other:v1", target.host());
    let error = copy(&clients, &source.at("team/app:v1"), &dst)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
    assert_eq!(prod.head_manifest("other", "v1").await.unwrap(), None);
    let blob = support::http_client()
        .head(format!("{}/v2/other/blobs/{layer}", target.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 404);
}

#[tokio::test]
async fn a_redirect_to_blob_storage_gets_no_credentials() {
    let registry = Registry::start(RegistryOptions::htpasswd("ci", "pw"));
    let proxy = FaultProxy::start(registry.addr);
    let target = Registry::start(RegistryOptions::anonymous());
    let image = TestImage::generate(13, &[5000]);
    Pusher::new(&registry.url())
        .basic_auth("ci", "pw")
        .push_image("team/app", &image, Some("v1"))
        .await;
    // "Blob storage": a plain proxy on another port in front of an anonymous registry holding
    // the same blob, as S3 would hold it for a registry that redirects.
    let storage_registry = Registry::start(RegistryOptions::anonymous());
    Pusher::new(&storage_registry.url())
        .push_image("store", &image, None)
        .await;
    let storage = FaultProxy::start(storage_registry.addr);
    let layer = image.layers[0].digest.clone();
    proxy.inject(
        Fault::redirect(&format!("{}/v2/store/blobs/{layer}", storage.url()))
            .on("GET")
            .path_contains(&layer),
    );
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pw");
    std::fs::write(&password_file, "pw").unwrap();
    let auth = config::Auth::Password {
        username: "ci".into(),
        password_file,
    };
    let clients = clients(
        vec![
            settings("dev", &proxy.url(), auth),
            settings("prod", &target.url(), config::Auth::Anonymous),
        ],
        Arc::new(registry::NoObserver),
    );
    copy(
        &clients,
        &format!("{}/team/app:v1", proxy.host()),
        &format!("{}/app:v1", target.host()),
    )
    .await
    .unwrap();
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1, "{at_storage:#?}");
    assert!(!at_storage[0].authorization);
    assert!(proxy
        .requests()
        .iter()
        .filter(|r: &&ProxyRequest| r.status != 401)
        .all(|r| r.authorization));
    assert_eq!(raw(&target, "app:v1").await, image.manifest);
}

/// Writes an executable `docker-credential-NAME` into `dir` that logs its stdin and answers with
/// `user`/`secret`.
fn credential_helper(dir: &Path, name: &str, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    let log = dir.join("helper-stdin");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 3\ncat > '{}'\nprintf '{{\"ServerURL\":\"x\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}'\n",
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn retagd_copy_reads_credentials_from_docker_config_auths_and_cred_helpers() {
    let registry = Registry::start(RegistryOptions::htpasswd("ci", "helper-pw"));
    let image = TestImage::generate(14, &[100, 200]);
    Pusher::new(&registry.url())
        .basic_auth("ci", "helper-pw")
        .push_image("team/app", &image, Some("v1.0.0-rc.1"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    credential_helper(dir.path(), "retagdtest", "ci", "helper-pw");
    let with_helper = dir.path().join("helper.json");
    let host = registry.host();
    std::fs::write(
        &with_helper,
        serde_json::json!({"credHelpers": {&host: "retagdtest"}}).to_string(),
    )
    .unwrap();
    let with_auths = dir.path().join("auths.json");
    std::fs::write(
        &with_auths,
        serde_json::json!({"auths": {format!("https://{host}"): {"auth": "Y2k6aGVscGVyLXB3"}}})
            .to_string(),
    )
    .unwrap();
    let run = |docker_config: &Path, args: &[&str]| {
        let config = Config::new()
            .registry("local", &registry.url())
            .registry_setting(
                "local",
                &format!("docker_config = \"{}\"", docker_config.display()),
            )
            .pipeline(Pipeline::new("p", "local", "team/app").stage(Stage::new("dev").semver("*")))
            .write(&dir.path().join("retagd.toml"));
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        support::process::retagd()
            .arg("copy")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("PATH", path)
            .env("DOCKER_CONFIG", dir.path().join("nowhere"))
            .output()
            .unwrap()
    };
    let src = format!("{host}/team/app:v1.0.0-rc.1");
    let out = run(&with_helper, &[&src, &format!("{host}/prod/app:v1.0.0")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "copied {src} -> {host}/prod/app:v1.0.0 (mounted 3 blobs, pushed 1 manifest)\ndigest {}\n",
            image.digest
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("helper-stdin")).unwrap(),
        host
    );

    let out = run(&with_auths, &[&src, &format!("{host}/prod/app:v1.0.0")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("already up to date: {host}/prod/app:v1.0.0\n")),
        "{stdout}"
    );

    let out = run(
        &with_auths,
        &[
            &src,
            &format!("{host}/prod/app:v1.0.0@sha256:{}", "0".repeat(64)),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("names digest sha256:000"), "{stderr}");

    let out = run(&with_auths, &[&src, "not a reference"]);
    assert_eq!(out.status.code(), Some(2));
}
