//! The registry operations the engine drives, as a trait: the real implementation is
//! [`Registries`]; the engine's unit tests use an in-memory one, so the driver's logic (digest
//! cache, re-checks of unreadable tags, lock and slot ordering) is tested without a registry.
//! Integration tests still run the engine against the real CNCF registry.

use futures_util::future::BoxFuture;

use super::plan::{Promotion, StagePlan};
use crate::reference::{Digest, Reference};
use crate::registry::{self, referrers, Registries};

/// What one registry operation answers.
pub type Result<T> = std::result::Result<T, registry::Error>;

/// What a reconcile asks of registries, by configured registry name.
pub trait Backend: Send + Sync {
    /// Every tag of `repository`; a repository that does not exist is an error that
    /// [`registry::Error::is_not_found`] recognises.
    fn list_tags<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// The digest `tag` names, or `None` when it does not exist.
    fn head<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Digest>>>;

    /// The manifest `tag` names (its bytes, verified digest and media type), or `None` when it
    /// does not exist: a GET where the digest is needed and a copy of it will likely follow.
    fn fetch<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<registry::Manifest>>>;

    /// Copies `promotion.digest` from its source stage to `to`'s repository as
    /// `promotion.to_tag`, skipping the requests whose answers `known` holds.
    fn copy<'a>(
        &'a self,
        promotion: &'a Promotion,
        to: &'a StagePlan,
        known: registry::Known<'a>,
    ) -> BoxFuture<'a, Result<registry::Report>>;

    /// Carries the referrers of `job.digest` that the target lacks (see
    /// [`registry::referrers`]); what failed is in the report, and `memo` remembers what the
    /// target has. An error only when a registry is not configured.
    fn referrers<'a>(
        &'a self,
        job: &'a ReferrerJob<'a>,
        memo: &'a mut referrers::Memo,
    ) -> BoxFuture<'a, Result<referrers::Report>>;

    /// The host of a configured registry, as records name it (the name itself when unknown).
    fn host(&self, registry: &str) -> String;

    /// Writes a promotion record (see [`registry::referrers::attach`]); the artifact
    /// manifest's digest.
    fn attach<'a>(&'a self, job: &'a RecordJob<'a>) -> BoxFuture<'a, Result<Digest>>;

    /// The promotion records in a repository about `subjects` (see
    /// [`registry::referrers::records`]); `tags` is the repository's listing.
    fn records<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        subjects: &'a [Digest],
        tags: &'a [String],
    ) -> BoxFuture<'a, Result<referrers::Found>>;

    /// The cosign signatures of `digest` in a repository, unchecked (see
    /// [`registry::referrers::signatures`]); `tags` is the repository's listing.
    fn signatures<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        digest: &'a Digest,
        tags: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<crate::cosign::Evidence>>>;
}

/// The referrers of one promoted digest to carry, by configured registry name.
#[derive(Debug, Clone, Copy)]
pub struct ReferrerJob<'a> {
    /// The source stage's registry.
    pub from_registry: &'a str,
    /// The source stage's repository.
    pub from_repository: &'a str,
    /// The promoted stage's registry.
    pub to_registry: &'a str,
    /// The promoted stage's repository.
    pub to_repository: &'a str,
    /// The promoted digest.
    pub digest: &'a Digest,
    /// The source repository's tags, as this round listed them.
    pub source_tags: &'a [String],
    /// artifactTypes carried; empty carries all.
    pub artifact_types: &'a [String],
}

/// One promotion record to write, by configured registry name.
#[derive(Debug, Clone, Copy)]
pub struct RecordJob<'a> {
    /// The target registry.
    pub registry: &'a str,
    /// The target repository.
    pub repository: &'a str,
    /// The promoted manifest.
    pub subject: &'a Digest,
    /// The record's artifact.
    pub artifact: &'a crate::record::Artifact,
    /// The record's time, for the index entry's annotation.
    pub time: &'a str,
    /// An earlier record in this repository wrote the empty config: skip it.
    pub config_present: bool,
}

impl Registries {
    fn client(&self, name: &str) -> Result<std::sync::Arc<registry::Client>> {
        self.get(name)
            .ok_or_else(|| registry::Error::NotConfigured(name.to_string()))
    }
}

impl Backend for Registries {
    fn list_tags<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let client = self.client(registry)?;
            Ok(client.list_tags(repository).await?.tags)
        })
    }

    fn head<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Digest>>> {
        Box::pin(async move {
            let client = self.client(registry)?;
            Ok(client
                .head_manifest(repository, tag)
                .await?
                .map(|h| h.digest))
        })
    }

    fn fetch<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<registry::Manifest>>> {
        Box::pin(async move {
            let client = self.client(registry)?;
            match client.get_manifest(repository, tag).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn copy<'a>(
        &'a self,
        p: &'a Promotion,
        to: &'a StagePlan,
        known: registry::Known<'a>,
    ) -> BoxFuture<'a, Result<registry::Report>> {
        Box::pin(async move {
            let src = self.client(&p.from_registry)?;
            let dst = self.client(&to.registry)?;
            let src_ref = Reference {
                registry: src.host().to_string(),
                repository: p.from_repository.clone(),
                tag: Some(p.from_tag.clone()),
                digest: Some(p.digest.clone()),
            };
            let dst_ref = Reference {
                registry: dst.host().to_string(),
                repository: to.repository.clone(),
                tag: Some(p.to_tag.clone()),
                digest: None,
            };
            registry::copy_knowing(&src, &src_ref, &dst, &dst_ref, p.overwrite, known).await
        })
    }

    fn referrers<'a>(
        &'a self,
        job: &'a ReferrerJob<'a>,
        memo: &'a mut referrers::Memo,
    ) -> BoxFuture<'a, Result<referrers::Report>> {
        Box::pin(async move {
            let src = self.client(job.from_registry)?;
            let dst = self.client(job.to_registry)?;
            let route = referrers::Route {
                src: &src,
                src_repo: job.from_repository,
                dst: &dst,
                dst_repo: job.to_repository,
                artifact_types: job.artifact_types,
            };
            Ok(referrers::carry(&route, job.digest, job.source_tags, memo).await)
        })
    }

    fn host(&self, registry: &str) -> String {
        self.get(registry)
            .map_or_else(|| registry.to_string(), |c| c.host().to_string())
    }

    fn attach<'a>(&'a self, job: &'a RecordJob<'a>) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(async move {
            let client = self.client(job.registry)?;
            referrers::attach(
                &client,
                job.repository,
                job.subject,
                job.artifact,
                (job.time, job.config_present),
            )
            .await
        })
    }

    fn records<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        subjects: &'a [Digest],
        tags: &'a [String],
    ) -> BoxFuture<'a, Result<referrers::Found>> {
        Box::pin(async move {
            let client = self.client(registry)?;
            referrers::records(&client, repository, subjects, tags).await
        })
    }

    fn signatures<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        digest: &'a Digest,
        tags: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<crate::cosign::Evidence>>> {
        Box::pin(async move {
            let client = self.client(registry)?;
            referrers::signatures(&client, repository, digest, tags).await
        })
    }
}
