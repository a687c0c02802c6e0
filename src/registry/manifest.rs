//! Manifests as exact bytes, and the descriptors a copy has to walk.
//!
//! A manifest is never re-serialized: its digest is the sha256 of the bytes the registry sent,
//! and those bytes are what gets pushed. Parsing only reads the descriptors (children of an index,
//! config and layers of an image) to know what must exist in the target repository first.

use serde::Deserialize;

use crate::reference::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (multi-arch).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header for every manifest GET and HEAD. All four, always: leaving one out makes
/// the CNCF registry serve a platform child of a list, or answer `MANIFEST_UNKNOWN`.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Registries (CNCF, ECR) refuse manifests above 4 MiB; so do we, before reading one whole.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// An index with more children than this is not an image anyone deploys.
pub const MAX_CHILDREN: usize = 1024;

/// Layer media types that are not distributable: their bytes live elsewhere (`urls`) and
/// registries refuse uploads of them; copies skip them, as crane and skopeo do.
const FOREIGN_LAYERS: [&str; 3] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

/// What a HEAD tells about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// From `Docker-Content-Digest`.
    pub digest: Digest,
    /// From `Content-Type`, parameters stripped.
    pub media_type: String,
    /// From `Content-Length`, when sent.
    pub size: Option<u64>,
}

/// A manifest's exact bytes with their verified digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes as the registry sent them.
    pub bytes: bytes::Bytes,
    /// `sha256` of `bytes`, computed here.
    pub digest: Digest,
    /// The body's `mediaType`, else the response's `Content-Type`; sent back on PUT.
    pub media_type: String,
}

/// A blob or manifest a manifest points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// What a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// An index or list: child manifests.
    Index(Vec<Descriptor>),
    /// An image or artifact: the config, then the layers (distributable ones only).
    Image(Vec<Descriptor>),
}

/// Why a manifest body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Docker schema 1 (signed or not): deprecated, digest not stable across registries.
    #[error("Docker schema 1 manifests are not supported (convert the image to schema 2 or OCI)")]
    Schema1,
    /// Not JSON, or descriptors of the wrong shape.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A media type we cannot copy faithfully.
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    /// Too many children.
    #[error("index has {0} children (limit {MAX_CHILDREN})")]
    TooManyChildren(usize),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
}

/// The media type a PUT must carry: the body's `mediaType`, else the GET's `Content-Type`
/// without parameters. Schema 1 and unknown types are refused here, before anything is written.
pub fn media_type(bytes: &[u8], content_type: Option<&str>) -> Result<String, Error> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| !c.is_empty());
    let media_type = raw.media_type.clone().or(header).unwrap_or_default();
    if raw.schema_version == Some(1)
        || raw.fs_layers.is_some()
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(Error::Schema1);
    }
    match media_type.as_str() {
        OCI_INDEX | OCI_MANIFEST | DOCKER_LIST | DOCKER_MANIFEST => Ok(media_type),
        // An OCI body without mediaType served as plain JSON: infer from its shape.
        "" | "application/json" if raw.manifests.is_some() => Ok(OCI_INDEX.to_string()),
        "" | "application/json" if raw.config.is_some() => Ok(OCI_MANIFEST.to_string()),
        other => Err(Error::MediaType(other.to_string())),
    }
}

/// The descriptors a manifest of `media_type` refers to.
pub fn contents(bytes: &[u8], media_type: &str) -> Result<Contents, Error> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    let convert = |d: RawDescriptor, what: &str| -> Result<Descriptor, Error> {
        let digest = d
            .digest
            .parse::<Digest>()
            .map_err(|e| Error::Malformed(format!("{what}: {e}")))?;
        Ok(Descriptor {
            media_type: d.media_type.unwrap_or_default(),
            digest,
            size: d.size,
        })
    };
    match media_type {
        OCI_INDEX | DOCKER_LIST => {
            let children = raw.manifests.unwrap_or_default();
            if children.len() > MAX_CHILDREN {
                return Err(Error::TooManyChildren(children.len()));
            }
            let children = children
                .into_iter()
                .enumerate()
                .map(|(i, d)| convert(d, &format!("manifests[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Contents::Index(children))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw
                .config
                .ok_or_else(|| Error::Malformed("image manifest without config".into()))?;
            let mut blobs = vec![convert(config, "config")?];
            for (i, layer) in raw.layers.unwrap_or_default().into_iter().enumerate() {
                let layer = convert(layer, &format!("layers[{i}]"))?;
                if !FOREIGN_LAYERS.contains(&layer.media_type.as_str()) {
                    blobs.push(layer);
                }
            }
            Ok(Contents::Image(blobs))
        }
        other => Err(Error::MediaType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn media_type_comes_from_the_body_then_the_header() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{D}","size":1}}}}"#
        );
        assert_eq!(
            media_type(body.as_bytes(), Some(OCI_MANIFEST)).unwrap(),
            DOCKER_MANIFEST
        );
        let body =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":1}},"layers":[]}}"#);
        let with_params = format!("{OCI_MANIFEST}; charset=utf-8");
        assert_eq!(
            media_type(body.as_bytes(), Some(&with_params)).unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(media_type(body.as_bytes(), None).unwrap(), OCI_MANIFEST);
    }

    #[test]
    fn schema1_and_strange_types_are_refused() {
        let s1 = br#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#;
        assert_eq!(media_type(s1, None), Err(Error::Schema1));
        let art = br#"{"schemaVersion":2,"mediaType":"application/x-thing"}"#;
        assert!(matches!(media_type(art, None), Err(Error::MediaType(_))));
        assert!(matches!(
            media_type(b"<html>", None),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn contents_list_children_or_blobs_without_foreign_layers() {
        let index = format!(
            r#"{{"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":7,"platform":{{"os":"linux"}}}}]}}"#
        );
        match contents(index.as_bytes(), OCI_INDEX).unwrap() {
            Contents::Index(c) => assert_eq!((c.len(), c[0].size), (1, 7)),
            other => panic!("{other:?}"),
        }
        let foreign = FOREIGN_LAYERS[0];
        let image = format!(
            r#"{{"config":{{"digest":"{D}","size":1}},"layers":[{{"digest":"{D}","size":2}},{{"mediaType":"{foreign}","digest":"{D}","size":3,"urls":["https://x"]}}]}}"#
        );
        match contents(image.as_bytes(), OCI_MANIFEST).unwrap() {
            Contents::Image(b) => assert_eq!(b.iter().map(|d| d.size).collect::<Vec<_>>(), [1, 2]),
            other => panic!("{other:?}"),
        }
        let bad = r#"{"config":{"digest":"sha256:../../x","size":1}}"#;
        assert!(contents(bad.as_bytes(), OCI_MANIFEST)
            .unwrap_err()
            .to_string()
            .contains("config"));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations};

    static SEEDS: &[&[u8]] = &[
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7","size":5,"urls":["https://example.com/l"]}]}"#,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":500,"platform":{"architecture":"amd64","os":"linux"}}]}"#,
        br#"{"schemaVersion":1,"name":"a/b","tag":"v1","fsLayers":[{"blobSum":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}]}"#,
    ];

    #[test]
    fn fuzz_manifests_and_indexes_are_walked_or_refused() {
        fuzz("manifests", mutations(SEEDS), |bytes| {
            if let Ok(media_type) = media_type(&bytes, Some("application/json")) {
                let _ = contents(&bytes, &media_type);
            }
            Ok(())
        });
    }
}
