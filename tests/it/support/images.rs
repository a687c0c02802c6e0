//! Deterministic test images and the ways to put them into a registry.
//!
//! The same seed always gives the same bytes, so the same digests: tests can compare what a
//! registry holds with what they generated. Images are OCI (manifest, config, layers); an
//! index holds linux/amd64 and linux/arm64 children.
//!
//! Seeding: [`Pusher`] speaks the registry API directly (plain reqwest, optional Basic
//! credentials), [`skopeo_push`] goes through `skopeo copy` from an OCI layout (any auth,
//! including the token flow, and TLS), and [`put_tags`] creates many tags quickly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::{http_client, sha256_digest};

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type (the bytes are random, not real gzip; registries do not care).
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// An `Accept` header with all four manifest types, as retagd sends it.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A content-addressed blob (config or layer).
#[derive(Clone, Debug)]
pub struct Blob {
    /// Its media type in a descriptor.
    pub media_type: String,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Bytes,
}

impl Blob {
    /// A blob of `data` with its digest computed.
    pub fn new(media_type: &str, data: Bytes) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    /// The OCI descriptor of this blob.
    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// An OCI image: config and layers, and the manifest bytes that reference them.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// `os` of the config (and of the index entry).
    pub os: String,
    /// `architecture` of the config (and of the index entry).
    pub architecture: String,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, in order.
    pub layers: Vec<Blob>,
    /// The exact manifest bytes.
    pub manifest: Bytes,
    /// `sha256` of `manifest`.
    pub digest: String,
}

impl TestImage {
    /// A linux/amd64 image with one random layer per entry of `layer_sizes` (bytes).
    pub fn generate(seed: u64, layer_sizes: &[usize]) -> TestImage {
        TestImage::generate_for(seed, layer_sizes, "linux", "amd64")
    }

    /// An image for `os`/`architecture`.
    pub fn generate_for(
        seed: u64,
        layer_sizes: &[usize],
        os: &str,
        architecture: &str,
    ) -> TestImage {
        let layers: Vec<Blob> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut rng =
                    SplitMix64::new(seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
                Blob::new(OCI_LAYER, rng.bytes(size))
            })
            .collect();
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let history: Vec<serde_json::Value> = (0..layers.len())
            .map(|i| json!({"created_by": format!("retagd test layer {i}")}))
            .collect();
        let config = json!({
            "architecture": architecture,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Labels": {"org.example.retagd.test-seed": seed.to_string()},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = Blob::new(
            OCI_CONFIG,
            Bytes::from(serde_json::to_vec(&config).expect("serialize the image config")),
        );
        let layer_descriptors: Vec<serde_json::Value> =
            layers.iter().map(Blob::descriptor).collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layer_descriptors,
        });
        let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("serialize the manifest"));
        TestImage {
            os: os.to_string(),
            architecture: architecture.to_string(),
            digest: sha256_digest(&manifest),
            config,
            layers,
            manifest,
        }
    }

    /// Config first, then the layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }

    /// The descriptor of this manifest in an index, with its platform.
    pub fn descriptor(&self) -> serde_json::Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest,
            "size": self.manifest.len(),
            "platform": {"architecture": self.architecture, "os": self.os},
        })
    }
}

/// A two-platform OCI index (linux/amd64, linux/arm64).
#[derive(Clone, Debug)]
pub struct TestIndex {
    /// The child images, amd64 then arm64.
    pub children: Vec<TestImage>,
    /// The exact index bytes.
    pub manifest: Bytes,
    /// `sha256` of `manifest`.
    pub digest: String,
}

impl TestIndex {
    /// Children generated from seeds derived from `seed`, each with `layer_sizes`.
    pub fn generate(seed: u64, layer_sizes: &[usize]) -> TestIndex {
        let children = vec![
            TestImage::generate_for(
                seed.wrapping_mul(2).wrapping_add(1),
                layer_sizes,
                "linux",
                "amd64",
            ),
            TestImage::generate_for(
                seed.wrapping_mul(2).wrapping_add(2),
                layer_sizes,
                "linux",
                "arm64",
            ),
        ];
        let descriptors: Vec<serde_json::Value> =
            children.iter().map(TestImage::descriptor).collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        });
        let manifest = Bytes::from(serde_json::to_vec(&index).expect("serialize the index"));
        TestIndex {
            children,
            digest: sha256_digest(&manifest),
            manifest,
        }
    }
}

/// Either kind of test artifact, where both are accepted.
#[derive(Clone, Copy, Debug)]
pub enum Artifact<'a> {
    /// A single image.
    Image(&'a TestImage),
    /// An index and its children.
    Index(&'a TestIndex),
}

impl<'a> From<&'a TestImage> for Artifact<'a> {
    fn from(image: &'a TestImage) -> Artifact<'a> {
        Artifact::Image(image)
    }
}

impl<'a> From<&'a TestIndex> for Artifact<'a> {
    fn from(index: &'a TestIndex) -> Artifact<'a> {
        Artifact::Index(index)
    }
}

impl Artifact<'_> {
    /// The top-level manifest bytes.
    pub fn manifest(&self) -> &Bytes {
        match self {
            Artifact::Image(image) => &image.manifest,
            Artifact::Index(index) => &index.manifest,
        }
    }

    /// The top-level digest.
    pub fn digest(&self) -> &str {
        match self {
            Artifact::Image(image) => &image.digest,
            Artifact::Index(index) => &index.digest,
        }
    }

    /// The top-level media type.
    pub fn media_type(&self) -> &'static str {
        match self {
            Artifact::Image(_) => OCI_MANIFEST,
            Artifact::Index(_) => OCI_INDEX,
        }
    }

    /// Every image in it: the image itself, or the index's children.
    pub fn images(&self) -> Vec<&TestImage> {
        match self {
            Artifact::Image(image) => vec![*image],
            Artifact::Index(index) => index.children.iter().collect(),
        }
    }
}

/// Pushes test artifacts over the registry API with a plain HTTP client: blobs by POST then a
/// monolithic PUT `?digest=`, manifests by PUT. Basic credentials, if set, are sent with every
/// request (the htpasswd registry accepts them without a challenge round trip).
#[derive(Clone, Debug)]
pub struct Pusher {
    client: reqwest::Client,
    base: url::Url,
    authorization: Option<String>,
}

impl Pusher {
    /// A pusher for the registry at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: &str) -> Pusher {
        Pusher::with_client(base_url, http_client())
    }

    /// A pusher using `client`, e.g. [`crate::support::https_client`] for a TLS registry.
    pub fn with_client(base_url: &str, client: reqwest::Client) -> Pusher {
        Pusher {
            client,
            base: url::Url::parse(base_url)
                .unwrap_or_else(|e| panic!("registry URL {base_url:?}: {e}")),
            authorization: None,
        }
    }

    /// Send these Basic credentials.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Pusher {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {encoded}"));
        self
    }

    fn url(&self, path: &str) -> url::Url {
        self.base
            .join(path)
            .unwrap_or_else(|e| panic!("join {path:?} to {}: {e}", self.base))
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }

    /// Uploads one blob (always; the registry deduplicates).
    pub async fn push_blob(&self, repo: &str, blob: &Blob) {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let response = self
            .request(reqwest::Method::POST, start.clone())
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {start}: {e}"));
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(location) = location.filter(|_| status == reqwest::StatusCode::ACCEPTED) else {
            let body = response.text().await.unwrap_or_default();
            panic!("POST {start}: expected 202 with Location, got {status}: {body}");
        };
        let mut put = start
            .join(&location)
            .unwrap_or_else(|e| panic!("upload Location {location:?}: {e}"));
        put.query_pairs_mut().append_pair("digest", &blob.digest);
        let response = self
            .request(reqwest::Method::PUT, put.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, blob.data.len().to_string())
            .body(blob.data.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {put}: {e}"));
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            panic!(
                "PUT blob {} to {repo}: expected 201, got {status}: {body}",
                blob.digest
            );
        }
    }

    /// PUTs manifest bytes as `repo:reference`; returns the registry's `Docker-Content-Digest`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &[u8],
        media_type: &str,
    ) -> String {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self
            .request(reqwest::Method::PUT, url.clone())
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(manifest.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status != reqwest::StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            panic!("PUT manifest {repo}:{reference}: expected 201, got {status}: {body}");
        }
        digest
            .unwrap_or_else(|| panic!("PUT manifest {repo}:{reference}: no Docker-Content-Digest"))
    }

    /// Pushes an image: its blobs, then its manifest as `tag` (or by digest with `None`).
    pub async fn push_image(&self, repo: &str, image: &TestImage, tag: Option<&str>) {
        for blob in image.blobs() {
            self.push_blob(repo, blob).await;
        }
        let reference = tag.unwrap_or(&image.digest);
        let digest = self
            .push_manifest(repo, reference, &image.manifest, OCI_MANIFEST)
            .await;
        assert_eq!(
            digest, image.digest,
            "registry digest of the pushed manifest"
        );
    }

    /// Pushes an index: each child by digest first (the registry refuses an index whose
    /// children are missing), then the index as `tag` (or by digest with `None`).
    pub async fn push_index(&self, repo: &str, index: &TestIndex, tag: Option<&str>) {
        for child in &index.children {
            self.push_image(repo, child, None).await;
        }
        let reference = tag.unwrap_or(&index.digest);
        let digest = self
            .push_manifest(repo, reference, &index.manifest, OCI_INDEX)
            .await;
        assert_eq!(digest, index.digest, "registry digest of the pushed index");
    }

    /// Pushes either kind of artifact.
    pub async fn push(&self, repo: &str, artifact: Artifact<'_>, tag: Option<&str>) {
        match artifact {
            Artifact::Image(image) => self.push_image(repo, image, tag).await,
            Artifact::Index(index) => self.push_index(repo, index, tag).await,
        }
    }

    /// GETs a manifest (all four types accepted); returns its bytes and `Content-Type`.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> (Bytes, String) {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self
            .request(reqwest::Method::GET, url.clone())
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "GET manifest {repo}:{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        (body, content_type)
    }
}

/// Creates `tags` in `repo` of an anonymous registry, all pointing at `manifest` (whose blobs or
/// children must already be in the repository), with `concurrency` requests in flight on one
/// keep-alive client. The CNCF registry answers some concurrent writes to one repository with a
/// transient 500; those (and connection errors) are retried with a short backoff. Returns how
/// many retries were needed. Panics if a tag still fails after 20 tries.
pub async fn put_tags(
    base_url: &str,
    repo: &str,
    manifest: &[u8],
    media_type: &str,
    tags: &[String],
    concurrency: usize,
) -> usize {
    let client = http_client();
    let manifest = Bytes::copy_from_slice(manifest);
    let base = base_url.trim_end_matches('/').to_string();
    let results = futures_util::stream::iter(tags.iter().cloned())
        .map(|tag| {
            let client = client.clone();
            let manifest = manifest.clone();
            let url = format!("{base}/v2/{repo}/manifests/{tag}");
            async move {
                let mut last_error = String::new();
                for attempt in 0..20u32 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    }
                    let result = client
                        .put(&url)
                        .header(reqwest::header::CONTENT_TYPE, media_type)
                        .body(manifest.clone())
                        .send()
                        .await;
                    match result {
                        Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                            return Ok(attempt as usize);
                        }
                        Ok(response) if response.status().is_server_error() => {
                            last_error = format!("{}", response.status());
                        }
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            return Err(format!("PUT {url}: {status}: {body}"));
                        }
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Err(format!(
                    "PUT {url}: still failing after 20 tries: {last_error}"
                ))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<Result<usize, String>>>()
        .await;
    let mut retries = 0;
    for result in results {
        match result {
            Ok(n) => retries += n,
            Err(e) => panic!("put_tags: {e}"),
        }
    }
    retries
}

/// How skopeo reaches a registry.
#[derive(Clone, Debug, Default)]
pub struct SkopeoOptions {
    /// Credentials (`--creds`/`--dest-creds`); `None` means anonymous (`--no-creds`).
    pub creds: Option<(String, String)>,
    /// A directory with `ca.crt` to verify the registry's TLS certificate (`--cert-dir`);
    /// `None` means plain HTTP or unverified TLS (`--tls-verify=false`).
    pub cert_dir: Option<PathBuf>,
}

impl SkopeoOptions {
    /// Anonymous, and plain HTTP (or unverified TLS) until [`Self::with_cert_dir`].
    pub fn new() -> SkopeoOptions {
        SkopeoOptions::default()
    }

    /// With these credentials.
    pub fn with_creds(mut self, user: &str, password: &str) -> SkopeoOptions {
        self.creds = Some((user.to_string(), password.to_string()));
        self
    }

    /// Verify TLS with the `ca.crt` in `dir` (e.g. [`crate::support::pki::Pki::ca_dir`]).
    pub fn with_cert_dir(mut self, dir: &Path) -> SkopeoOptions {
        self.cert_dir = Some(dir.to_path_buf());
        self
    }

    /// The flags for one side: `prefix` is `"dest-"`, `"src-"` or `""`.
    fn flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = Vec::new();
        match &self.creds {
            Some((user, password)) => {
                flags.push(format!("--{prefix}creds"));
                flags.push(format!("{user}:{password}"));
            }
            None => flags.push(format!("--{prefix}no-creds")),
        }
        match &self.cert_dir {
            Some(dir) => {
                flags.push(format!("--{prefix}cert-dir"));
                flags.push(dir.to_str().expect("cert dir is UTF-8").to_string());
            }
            None => flags.push(format!("--{prefix}tls-verify=false")),
        }
        flags
    }
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`) holding each
/// artifact under its tag (`org.opencontainers.image.ref.name`), for `skopeo copy oci:DIR:TAG`.
pub fn write_oci_layout(dir: &Path, entries: &[(&str, Artifact<'_>)]) {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
    let write_blob = |digest: &str, data: &[u8]| {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let path = blobs.join(hex);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    let mut manifests = Vec::new();
    for (tag, artifact) in entries {
        for image in artifact.images() {
            for blob in image.blobs() {
                write_blob(&blob.digest, &blob.data);
            }
            write_blob(&image.digest, &image.manifest);
        }
        write_blob(artifact.digest(), artifact.manifest());
        manifests.push(json!({
            "mediaType": artifact.media_type(),
            "digest": artifact.digest(),
            "size": artifact.manifest().len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
}

/// `skopeo copy --all --preserve-digests oci:LAYOUT:TAG docker://DEST`, where `dest` is
/// `HOST/REPO:TAG`. `--preserve-digests` makes skopeo fail rather than recompress the random
/// "gzip" layers (which would change every digest).
pub async fn skopeo_copy_from_layout(
    layout: &Path,
    tag: &str,
    dest: &str,
    options: &SkopeoOptions,
) {
    let layout = layout.to_str().expect("layout path is UTF-8");
    let mut args: Vec<String> = [
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(options.flags("dest-"));
    args.push(format!("oci:{layout}:{tag}"));
    args.push(docker_ref(dest));
    skopeo(&args).await;
}

/// Writes `artifact` to a temporary OCI layout and copies it to `dest` (`HOST/REPO:TAG`) with
/// skopeo: seeding that works through any auth the registry has (token flow included) and TLS.
pub async fn skopeo_push(artifact: Artifact<'_>, dest: &str, options: &SkopeoOptions) {
    let layout = tempfile::Builder::new()
        .prefix("retagd-oci-layout-")
        .tempdir()
        .expect("create the OCI layout temp dir");
    write_oci_layout(layout.path(), &[("seed", artifact)]);
    skopeo_copy_from_layout(layout.path(), "seed", dest, options).await;
}

/// `skopeo inspect --raw docker://REFERENCE`: the manifest bytes as the registry serves them, read
/// by an independent client. `reference` is `HOST/REPO:TAG` or `HOST/REPO@DIGEST`.
pub async fn skopeo_inspect_raw(reference: &str, options: &SkopeoOptions) -> Vec<u8> {
    let mut args = vec![
        "--insecure-policy".to_string(),
        "inspect".to_string(),
        "--raw".to_string(),
    ];
    args.extend(options.flags(""));
    args.push(docker_ref(reference));
    skopeo(&args).await
}

fn docker_ref(reference: &str) -> String {
    if reference.starts_with("docker://") {
        reference.to_string()
    } else {
        format!("docker://{reference}")
    }
}

/// `skopeo` with no proxy from the environment and `auth_file` (an empty `{}` one, normally) as
/// its only credentials, so nothing from the machine leaks in; stdin is closed.
pub fn skopeo_command(auth_file: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("skopeo");
    command
        .env("REGISTRY_AUTH_FILE", auth_file)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(std::process::Stdio::null());
    command
}

/// Runs [`skopeo_command`] with an empty auth file; panics with its stderr (credentials
/// masked) on failure.
async fn skopeo(args: &[String]) -> Vec<u8> {
    let auth_dir = tempfile::Builder::new()
        .prefix("retagd-skopeo-auth-")
        .tempdir()
        .expect("create the skopeo auth temp dir");
    let auth_file = auth_dir.path().join("auth.json");
    std::fs::write(&auth_file, "{}").expect("write the empty skopeo auth file");
    let output = tokio::process::Command::from(skopeo_command(&auth_file))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run skopeo (apt-get install -y skopeo): {e}"));
    if !output.status.success() {
        let mut shown = Vec::new();
        let mut mask_next = false;
        for arg in args {
            shown.push(if mask_next {
                "***".to_string()
            } else {
                arg.clone()
            });
            mask_next = arg.ends_with("creds") && !arg.ends_with("no-creds");
        }
        panic!(
            "skopeo {} failed ({}): {}",
            shown.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.stdout
}

/// SplitMix64: a tiny generator whose output is fixed forever, so fixtures never change.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        Bytes::from(out)
    }
}
