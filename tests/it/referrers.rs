//! Signatures, attestations and SBOMs follow a promoted image into other repositories and
//! registries (issue 16), against the CNCF registry 2.8, which has no referrers API: the cosign
//! tags and the referrers tag schema (`sha256-<hex>` indexes) are the paths here. Promotion
//! records are off, so the counts here are the other tools' referrers only; `records.rs` shows
//! records carried like any other referrer.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::config::{AUTO, MANUAL};
use support::cosign::{
    fallback_tag, payload, referrer, referrers_index, signature_manifest, Signer, SPDX,
};
use support::images::{Pusher, TestImage, TestIndex, OCI_INDEX};
use support::pipeline::{digest_at, run, text, Daemon, Env, DEADLINE, REPO};
use support::proxy::{Fault, FaultAction};
use support::registry::{Registry, RegistryOptions};

const STAGING: &str = "staging/api-gateway";
const RELEASE: &str = "release/api-gateway";

/// Requests a registry logged, `METHOD URI` each, from its log text.
fn requests(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("response completed"))
        .filter_map(|l| {
            let field = |name: &str| {
                let start = l.find(&format!("{name}="))? + name.len() + 1;
                let rest = &l[start..];
                let value = match rest.strip_prefix('"') {
                    Some(quoted) => &quoted[..quoted.find('"')?],
                    None => rest.split_whitespace().next()?,
                };
                Some(value.to_string())
            };
            Some(format!(
                "{} {}",
                field("http.request.method")?,
                field("http.request.uri")?
            ))
        })
        .collect()
}

/// The manifest bytes of `repo:reference` in `registry`, if it has them.
async fn manifest_at(registry: &Registry, repo: &str, reference: &str) -> Option<Vec<u8>> {
    registry.read(repo, "manifests", reference).await
}

/// The digests a `sha256-<hex>` index lists in `registry`.
async fn listed(registry: &Registry, repo: &str, subject: &str) -> Vec<String> {
    let Some(bytes) = manifest_at(registry, repo, &fallback_tag(subject)).await else {
        return Vec::new();
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_signed_image_with_an_sbom_arrives_with_both_and_later_attestations_follow() {
    let env = Env::start();
    let prod = Registry::start(RegistryOptions::anonymous());
    let dev = Pusher::new(&env.registry.url());
    let image = TestImage::generate(1, &[512]);
    dev.push_image(REPO, &image, Some("v1.2.0-dev.1")).await;
    let d = image.digest.clone();

    // cosign 2's signature tag, an SBOM as an OCI 1.1 referrer listed in the fallback index,
    // and an impostor: listed there too, but its subject is another image.
    let signer = Signer::generate();
    let signed = payload(&format!("{}/{REPO}", env.registry.host()), &d);
    let signature = signer.sign(&signed);
    let sig = signature_manifest(&[(signed, signature)]);
    let sig_tag = format!("{}.sig", fallback_tag(&d));
    sig.push(&dev, REPO, Some(&sig_tag)).await;
    let sbom = referrer(
        &d,
        image.manifest.len(),
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3"}"#,
    );
    sbom.push(&dev, REPO, None).await;
    let other = TestImage::generate(2, &[64]);
    dev.push_image(REPO, &other, None).await;
    let impostor = referrer(&other.digest, other.manifest.len(), SPDX, b"{}");
    impostor.push(&dev, REPO, None).await;
    let index = referrers_index(&[sbom.descriptor(SPDX), impostor.descriptor(SPDX)]);
    dev.push_manifest(REPO, &fallback_tag(&d), &index, OCI_INDEX)
        .await;

    // Production's fallback index already lists a referrer someone else wrote: it stays.
    let prod_pusher = Pusher::new(&prod.url());
    let theirs = referrer(&d, image.manifest.len(), "application/x-theirs", b"theirs");
    theirs.push(&prod_pusher, RELEASE, None).await;
    prod_pusher
        .push_manifest(
            RELEASE,
            &fallback_tag(&d),
            &referrers_index(&[theirs.descriptor("application/x-theirs")]),
            OCI_INDEX,
        )
        .await;

    let config = env.write(
        &env.config("1s", AUTO, AUTO)
            .registry("prod", &prod.url())
            .map_pipeline("api-gateway", |p| {
                p.setting("records = false")
                    .map_stage("staging", |s| s.in_repository(STAGING))
                    .map_stage("production", |s| {
                        s.in_registry("prod").in_repository(RELEASE)
                    })
            }),
    );
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let addr = daemon.address().await;

    // Staging (another repository: mounts) and production (another registry: transfers).
    for (registry, repo) in [(&env.registry, STAGING), (&prod, RELEASE)] {
        support::poll_until(
            &format!("{repo} to have the referrers"),
            DEADLINE,
            || async {
                let has_sig = digest_at(registry, repo, &sig_tag).await;
                let listed = listed(registry, repo, &d).await;
                (has_sig.as_deref() == Some(sig.digest.as_str()) && listed.contains(&sbom.digest))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            manifest_at(registry, repo, &sbom.digest).await.unwrap(),
            sbom.manifest.to_vec(),
            "{repo}: the SBOM's bytes are unchanged"
        );
        assert_eq!(
            manifest_at(registry, repo, &sig_tag).await.unwrap(),
            sig.manifest.to_vec()
        );
        assert!(
            manifest_at(registry, repo, &impostor.digest)
                .await
                .is_none(),
            "{repo}: a referrer of another image is not carried"
        );
    }
    let prod_listed = listed(&prod, RELEASE, &d).await;
    assert!(
        prod_listed.contains(&theirs.digest) && prod_listed.contains(&sbom.digest),
        "{prod_listed:?}"
    );

    // The status says how many arrived and which was skipped.
    let body = support::http_client()
        .get(format!("http://{addr}/api/v1/pipelines/api-gateway"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        status["stages"][2]["referrers"]["summary"], "2 of 2 copied",
        "{status:#}"
    );
    assert!(
        status["stages"][1]["referrers"]["skipped"]
            .to_string()
            .contains(&impostor.digest),
        "{status:#}"
    );

    // Steady state, counted from both registries' logs over two whole rounds: tag lists and
    // HEADs only, at most one HEAD per cosign or fallback tag per round.
    let rounds = || daemon.log().matches("reconciled").count();
    let wait_round = |after: usize| {
        support::poll_until("a reconcile", DEADLINE, move || async move {
            (rounds() > after).then_some(())
        })
    };
    let start = rounds();
    wait_round(start).await;
    let (dev_from, prod_from) = (env.registry.log().len(), prod.log().len());
    let start = rounds();
    wait_round(start + 1).await;
    let mut seen: Vec<String> = requests(&env.registry.log()[dev_from..]);
    seen.extend(requests(&prod.log()[prod_from..]));
    let writes_or_reads: Vec<&String> = seen
        .iter()
        .filter(|r| {
            !(r.starts_with("HEAD ") || (r.starts_with("GET ") && r.contains("/tags/list")))
        })
        .collect();
    assert!(writes_or_reads.is_empty(), "{seen:#?}");
    let mut heads: BTreeMap<&str, usize> = BTreeMap::new();
    for r in seen.iter().filter(|r| r.contains("/manifests/sha256-")) {
        *heads.entry(r.as_str()).or_default() += 1;
    }
    assert_eq!(
        heads.len(),
        4,
        "dev and staging: .sig and the index: {seen:#?}"
    );
    assert!(heads.values().all(|n| *n <= 2), "{seen:#?}");
    println!("steady state, two rounds: {seen:#?}");

    // An attestation pushed after the promotion arrives by the next round.
    let att = signature_manifest(&[(b"{\"payloadType\":\"x\"}".to_vec(), signer.sign(b"x"))]);
    let att_tag = format!("{}.att", fallback_tag(&d));
    att.push(&dev, REPO, Some(&att_tag)).await;
    support::poll_until("the attestation in production", DEADLINE, || async {
        (digest_at(&prod, RELEASE, &att_tag).await.as_deref() == Some(att.digest.as_str()))
            .then_some(())
    })
    .await;
}

/// The referrers API path. No registry here serves `GET /v2/<name>/referrers/<digest>` (the
/// CNCF registry 2.8 answers 404), so the test proxy answers it for the source repository, with
/// the listing a registry with the API would give; everything else is the real registry. The
/// SBOM is pushed by digest only: without the API answer, nothing would tell it exists.
#[tokio::test]
async fn referrers_listed_by_the_referrers_api_are_carried_and_indexed_in_a_target_without_it() {
    let env = Env::start();
    let dev = Pusher::new(&env.registry.url());
    let image = TestImage::generate(3, &[256]);
    dev.push_image(REPO, &image, Some("v1.2.0-dev.1")).await;
    let d = image.digest.clone();
    let sbom = referrer(
        &d,
        image.manifest.len(),
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3"}"#,
    );
    sbom.push(&dev, REPO, None).await;
    env.proxy.inject(
        Fault::new(FaultAction::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), OCI_INDEX.into())],
            body: String::from_utf8(referrers_index(&[sbom.descriptor(SPDX)]).to_vec()).unwrap(),
        })
        .on("GET")
        .path_contains(&format!("/v2/{REPO}/referrers/{d}"))
        .times(usize::MAX),
    );
    // Any other subject of the source has no referrers (asked for the SBOM's own).
    env.proxy.inject(
        Fault::new(FaultAction::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), OCI_INDEX.into())],
            body: String::from_utf8(referrers_index(&[]).to_vec()).unwrap(),
        })
        .on("GET")
        .path_contains(&format!("/v2/{REPO}/referrers/"))
        .times(usize::MAX),
    );
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .map_pipeline("api-gateway", |p| {
                p.setting("records = false")
                    .map_stage("staging", |s| s.in_repository(STAGING))
            }),
    );
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        manifest_at(&env.registry, STAGING, &sbom.digest)
            .await
            .unwrap(),
        sbom.manifest.to_vec()
    );
    assert_eq!(listed(&env.registry, STAGING, &d).await, vec![sbom.digest]);
    let asked: Vec<String> = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/referrers/"))
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    // The image's listing, one probe of the target (404: no API, so the index is kept), and
    // the SBOM's own listing (referrers of referrers).
    assert_eq!(asked.len(), 3, "{asked:#?}");
    assert!(
        asked[1].starts_with(&format!("GET /v2/{STAGING}/referrers/")),
        "{asked:#?}"
    );
}

/// A referrers answer that is not JSON (here from the proxy, in front of the real registry)
/// fails the referrers, never the promotion, and says so.
#[tokio::test]
async fn a_broken_referrers_answer_does_not_undo_the_promotion() {
    let env = Env::start();
    let dev = env.push(REPO, "v1.2.0-dev.1", 4).await;
    env.proxy.inject(
        Fault::new(FaultAction::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), OCI_INDEX.into())],
            body: "<html>not an index</html>".into(),
        })
        .on("GET")
        .path_contains("/referrers/")
        .times(usize::MAX),
    );
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .map_pipeline("api-gateway", |p| {
                p.setting("records = false")
                    .map_stage("staging", |s| s.in_repository(STAGING))
            }),
    );
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(STAGING, "v1.2.0-rc.1").await.as_deref(),
        Some(dev.as_str())
    );
    let log = text(&out);
    assert!(
        log.contains("referrers: 0 of 0 copied") && log.contains("not a JSON index"),
        "{log}"
    );
}

/// `promote.verify`: a candidate signed with the stage's key is promoted; one signed with another
/// key is not (the plan says why), until a signature by the key arrives, here a cosign 3 Sigstore
/// bundle stored as an OCI 1.1 referrer through the fallback index.
#[tokio::test]
async fn a_stage_with_verify_promotes_only_what_its_key_signed() {
    let env = Env::start();
    let dev = Pusher::new(&env.registry.url());
    let (ours, theirs) = (Signer::generate(), Signer::generate());
    let key_file = env.dir.path().join("cosign.pub");
    std::fs::write(&key_file, ours.public_pem()).unwrap();
    let sign_with = |signer: &Signer, digest: &str| {
        let signed = payload(&format!("{}/{REPO}", env.registry.host()), digest);
        let signature = signer.sign(&signed);
        signature_manifest(&[(signed, signature)])
    };
    let verify = format!(
        "{AUTO}, verify = {{ cosign_key_file = \"{}\" }}",
        key_file.display()
    );
    let config = env.write(&env.config("1s", &verify, MANUAL));

    let one = TestImage::generate(5, &[128]);
    dev.push_image(REPO, &one, Some("v1.2.0-dev.1")).await;
    sign_with(&ours, &one.digest)
        .push(
            &dev,
            REPO,
            Some(&format!("{}.sig", fallback_tag(&one.digest))),
        )
        .await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(one.digest.as_str())
    );

    // Signed by another key: not promoted, and the plan says why.
    let two = TestImage::generate(6, &[128]);
    dev.push_image(REPO, &two, Some("v1.2.0-dev.2")).await;
    sign_with(&theirs, &two.digest)
        .push(
            &dev,
            REPO,
            Some(&format!("{}.sig", fallback_tag(&two.digest))),
        )
        .await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.digest(REPO, "v1.2.0-rc.2").await, None);
    let out = run(&config, &["plan", "--json"]).await;
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let staging = &plan["pipelines"][0]["stages"][1]["action"];
    assert_eq!(staging["kind"], "unverified", "{plan:#}");
    assert_eq!(staging["code"], "not_verified", "{plan:#}");
    assert!(
        staging["reason"].as_str().unwrap().contains("another key"),
        "{plan:#}"
    );

    // cosign 3 signs with our key: a bundle referrer, listed in the fallback index.
    let bundle = referrer(
        &two.digest,
        two.manifest.len(),
        support::cosign::BUNDLE,
        &support::cosign::bundle(&ours, &two.digest),
    );
    bundle.push(&dev, REPO, None).await;
    let index = referrers_index(&[bundle.descriptor(support::cosign::BUNDLE)]);
    dev.push_manifest(REPO, &fallback_tag(&two.digest), &index, OCI_INDEX)
        .await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.2").await.as_deref(),
        Some(two.digest.as_str())
    );
}

/// A key that is not an ECDSA P-256 public key is a configuration error at start.
#[tokio::test]
async fn a_verify_key_that_is_not_p256_is_a_config_error() {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P384_SHA384_ASN1_SIGNING};
    let env = Env::start();
    let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let der = p384.public_key().as_der().unwrap();
    let key_file = env.dir.path().join("p384.pub");
    std::fs::write(&key_file, support::cosign::pem("PUBLIC KEY", der.as_ref())).unwrap();
    let verify = format!(
        "{AUTO}, verify = {{ cosign_key_file = \"{}\" }}",
        key_file.display()
    );
    let config = env.write(&env.config("1s", &verify, MANUAL));
    let out = run(&config, &["reconcile"]).await;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("promote.verify.cosign_key_file") && said.contains("P-256"),
        "{said}"
    );
}

/// For a multi-platform index, the referrers of each child come along too (cosign signs each
/// platform's manifest when asked to `--recursive`).
#[tokio::test]
async fn the_referrers_of_an_index_children_come_along() {
    let env = Env::start();
    let dev = Pusher::new(&env.registry.url());
    let index = TestIndex::generate(7, &[128]);
    dev.push_index(REPO, &index, Some("v1.2.0-dev.1")).await;
    let child = &index.children[1].digest;
    let signer = Signer::generate();
    let signed = payload("x", child);
    let signature = signer.sign(&signed);
    let sig = signature_manifest(&[(signed, signature)]);
    let sig_tag = format!("{}.sig", fallback_tag(child));
    sig.push(&dev, REPO, Some(&sig_tag)).await;
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .map_pipeline("api-gateway", |p| {
                p.setting("records = false")
                    .map_stage("staging", |s| s.in_repository(STAGING))
            }),
    );
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(STAGING, &sig_tag).await.as_deref(),
        Some(sig.digest.as_str())
    );
}

/// A `sha256-<hex>` tag that is not an index is refused where it is read: in the source the
/// referrers it would list are not found, in the target it is left alone; the promotion stands
/// and the log says why.
#[tokio::test]
async fn a_fallback_tag_that_is_not_an_index_is_left_alone() {
    let env = Env::start();
    let dev = Pusher::new(&env.registry.url());
    let image = TestImage::generate(8, &[128]);
    dev.push_image(REPO, &image, Some("v1.2.0-dev.1")).await;
    let d = image.digest.clone();
    let sbom = referrer(&d, image.manifest.len(), SPDX, b"{}");
    sbom.push(&dev, REPO, None).await;
    dev.push_manifest(
        REPO,
        &fallback_tag(&d),
        &referrers_index(&[sbom.descriptor(SPDX)]),
        OCI_INDEX,
    )
    .await;
    // In the target, the tag holds an image.
    let squatter = TestImage::generate(9, &[64]);
    dev.push_image(STAGING, &squatter, Some(&fallback_tag(&d)))
        .await;
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .map_pipeline("api-gateway", |p| {
                p.setting("records = false")
                    .map_stage("staging", |s| s.in_repository(STAGING))
            }),
    );
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(STAGING, "v1.2.0-rc.1").await.as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        env.digest(STAGING, &fallback_tag(&d)).await.as_deref(),
        Some(squatter.digest.as_str())
    );
    let said = text(&out);
    assert!(said.contains("not a referrers index; left alone"), "{said}");

    // In the source: nothing to list, said so, and the promotion of the next build stands.
    let next = TestImage::generate(10, &[128]);
    dev.push_image(REPO, &next, Some("v1.2.0-dev.2")).await;
    dev.push_image(REPO, &squatter, Some(&fallback_tag(&next.digest)))
        .await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(STAGING, "v1.2.0-rc.2").await.as_deref(),
        Some(next.digest.as_str())
    );
    let said = text(&out);
    let source_tag = format!("{REPO}:{} is a", fallback_tag(&next.digest));
    assert!(
        said.contains(&source_tag) && said.contains("not a referrers index"),
        "{said}"
    );
}
