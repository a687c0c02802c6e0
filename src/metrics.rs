//! The Prometheus metrics `retagd run` serves on `/metrics`.
//!
//! One [`Metrics`] per process, on its own `prometheus::Registry` (not the crate's global one,
//! so tests and one-shot commands never share series). The daemon feeds it what each reconcile
//! found ([`Metrics::stage_version`], [`Metrics::pending`], ...); the registry client feeds it
//! every request through [`Observer`].
//!
//! Info-style series (`retagd_stage_version_info`, `retagd_pending_promotion_info`) carry their
//! value in labels, so there is exactly one series per pipeline and stage: when the value
//! changes, the old series is removed before the new one is set, and a pipeline removed by a
//! reload loses its series.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::engine::{Action, Outcome, StagePlan, Wait};
use crate::registry::{Observer, RetryReason};

/// Seconds; registry requests on loopback take a millisecond, a blob upload over a WAN minutes.
const REQUEST_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds; a steady-state reconcile is a few requests, a first one may copy gigabytes.
const RECONCILE_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Every metric family, registered on a private registry.
pub struct Metrics {
    registry: Registry,
    stage_version: IntGaugeVec,
    pending: IntGaugeVec,
    promotions: IntCounterVec,
    reconcile_duration: HistogramVec,
    last_success: GaugeVec,
    reconcile_errors: IntCounterVec,
    registry_requests: IntCounterVec,
    registry_duration: HistogramVec,
    rate_limit: IntGaugeVec,
    retries: IntCounterVec,
    /// Deliveries of notifications, by endpoint host and result.
    pub notifications: IntCounterVec,
    webhooks: IntCounterVec,
    frozen: IntGaugeVec,
    waiting_until: GaugeVec,
    reloads: IntCounterVec,
    loaded_at: prometheus::Gauge,
    last_promotion: GaugeVec,
    pending_since: GaugeVec,
    /// When each stage's pending candidate (by digest) first showed as pending.
    pending_seen: Mutex<HashMap<(String, String), (String, f64)>>,
    /// The label values of the info series set now, per (pipeline, stage), so a change removes
    /// the old series.
    info: Mutex<HashMap<InfoKey, Vec<String>>>,
    /// Pipelines with a last-success series.
    pipelines: Mutex<BTreeSet<String>>,
    /// Promoted stages (pipeline, stage) with freeze and waiting series.
    held: Mutex<BTreeSet<(String, String)>>,
    referrers: IntCounterVec,
    unverified: IntCounterVec,
    drift: IntGaugeVec,
    /// The (pipeline, stage, tag) series of `retagd_drift`, so a resolved one goes to 0.
    drifted: Mutex<BTreeSet<(String, String, String)>>,
    /// Stages with a `retagd_stage_frozen` series: made at their first freeze, so a fleet that
    /// is never frozen does not carry a series per stage (a series costs about a KiB here).
    ever_frozen: Mutex<BTreeSet<(String, String)>>,
    /// Pipelines with a `retagd_records_pending` series: made at their first unwritten record.
    ever_unrecorded: Mutex<BTreeSet<String>>,
    records: IntCounterVec,
    unrecorded: IntGaugeVec,
}

/// An info series' family, pipeline and stage.
type InfoKey = (&'static str, String, String);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const STAGE_VERSION: &str = "stage_version";
const PENDING: &str = "pending";

impl Metrics {
    /// Registers every family, the build info and the process collector.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let m = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(m.clone()))?;
                Ok(m)
            };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let m = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(m.clone()))?;
                Ok(m)
            };
        let histogram_vec = |name: &str,
                             help: &str,
                             labels: &[&str],
                             buckets: &[f64]|
         -> Result<HistogramVec, prometheus::Error> {
            let m = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let last_success = GaugeVec::new(
            Opts::new(
                "retagd_last_successful_reconcile_timestamp_seconds",
                "Unix time of the pipeline's last reconcile that planned and applied without error.",
            ),
            &["pipeline"],
        )?;
        registry.register(Box::new(last_success.clone()))?;
        let waiting_until = GaugeVec::new(
            Opts::new(
                "retagd_stage_waiting_until_timestamp_seconds",
                "Unix time when a promotion held back goes ahead by itself: its source soak (min_age) ends or the stage's promotion window opens (why).",
            ),
            &["pipeline", "stage", "why"],
        )?;
        registry.register(Box::new(waiting_until.clone()))?;
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
                let m = GaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(m.clone()))?;
                Ok(m)
            };
        let last_promotion = gauge(
            "retagd_stage_last_promotion_timestamp_seconds",
            "Unix time of the last promotion into the stage that this process made (or found done).",
            &["pipeline", "stage"],
        )?;
        let pending_since = gauge(
            "retagd_pending_promotion_since_timestamp_seconds",
            "Unix time since when the stage's current candidate has been waiting for approval; alert on time() minus this.",
            &["pipeline", "stage"],
        )?;
        let loaded_at = prometheus::Gauge::with_opts(Opts::new(
            "retagd_config_last_load_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start or reload).",
        ))?;
        registry.register(Box::new(loaded_at.clone()))?;
        let metrics = Metrics {
            stage_version: gauge_vec(
                "retagd_stage_version_info",
                "The tag each stage's policy selects now, and its digest; always 1.",
                &["pipeline", "stage", "registry", "repository", "tag", "digest"],
            )?,
            pending: gauge_vec(
                "retagd_pending_promotion_info",
                "A promotion into a manual stage waiting for approval; always 1.",
                &["pipeline", "stage", "from_tag", "to_tag", "digest"],
            )?,
            promotions: counter_vec(
                "retagd_promotions_total",
                "Promotions by result: success (copied or found done), failure, conflict (target tag holds another digest; counted once per conflict); reason says why a failure failed.",
                &["pipeline", "stage", "result", "reason"],
            )?,
            reconcile_duration: histogram_vec(
                "retagd_reconcile_duration_seconds",
                "Time of one reconcile: listing, digest lookups, planning and copies.",
                &["pipeline"],
                &RECONCILE_BUCKETS,
            )?,
            last_success,
            reconcile_errors: counter_vec(
                "retagd_reconcile_errors_total",
                "Reconciles that could not plan (a registry failed) or whose promotions failed, by reason.",
                &["pipeline", "reason"],
            )?,
            registry_requests: counter_vec(
                "retagd_registry_requests_total",
                "HTTP requests to registries and their token servers, by answer status (\"error\" when none came).",
                &["registry", "method", "status"],
            )?,
            registry_duration: histogram_vec(
                "retagd_registry_request_duration_seconds",
                "Time to the answer's headers of registry requests.",
                &["registry", "method"],
                &REQUEST_BUCKETS,
            )?,
            rate_limit: gauge_vec(
                "retagd_registry_rate_limit_remaining",
                "Requests left in the registry's rate-limit window, when it reports one (ratelimit-remaining).",
                &["registry"],
            )?,
            retries: counter_vec(
                "retagd_registry_retries_total",
                "Registry requests retried, by reason: connection, server_error, rate_limited, timeout.",
                &["registry", "reason"],
            )?,
            notifications: counter_vec(
                "retagd_notifications_total",
                "Notification deliveries by endpoint host and result: delivered, failed (after retries), dropped (queue full).",
                &["host", "result"],
            )?,
            webhooks: counter_vec(
                "retagd_webhooks_total",
                "Registry webhooks received, by source and result: accepted, unauthorized, invalid.",
                &["source", "result"],
            )?,
            frozen: gauge_vec(
                "retagd_stage_frozen",
                "1 while a freeze (configured or set through the API) holds promotions into the stage, else 0; present once the stage was first frozen.",
                &["pipeline", "stage"],
            )?,
            waiting_until,
            reloads: counter_vec(
                "retagd_config_reloads_total",
                "Configuration reloads (SIGHUP) by result: success, failure (the running configuration stays).",
                &["result"],
            )?,
            loaded_at,
            last_promotion,
            pending_since,
            pending_seen: Mutex::new(HashMap::new()),
            info: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(BTreeSet::new()),
            held: Mutex::new(BTreeSet::new()),
            referrers: counter_vec(
                "retagd_referrers_total",
                "Referrers (signatures, attestations, SBOMs) carried into promoted stages, by result: copied (a manifest written to the target), failed (retried next round).",
                &["pipeline", "stage", "result"],
            )?,
            unverified: counter_vec(
                "retagd_unverified_total",
                "Reconciles that refused a stage's candidate for want of a valid cosign signature by the stage's key (promote.verify), by reason: no_signature, not_verified, other_digest, malformed, unreadable.",
                &["pipeline", "stage", "reason"],
            )?,
            drift: gauge_vec(
                "retagd_drift",
                "1 while a tag retagd wrote names another digest (someone pushed over it), 0 once it is resolved (moved back, healed, or gone).",
                &["pipeline", "stage", "tag"],
            )?,
            drifted: Mutex::new(BTreeSet::new()),
            ever_frozen: Mutex::new(BTreeSet::new()),
            ever_unrecorded: Mutex::new(BTreeSet::new()),
            records: counter_vec(
                "retagd_records_total",
                "Promotion records written into target repositories, by result: written, failed (kept and tried again at the next reconcile).",
                &["pipeline", "stage", "result"],
            )?,
            unrecorded: gauge_vec(
                "retagd_records_pending",
                "Promotion records of the pipeline not written yet; present once one could not be written.",
                &["pipeline"],
            )?,
            registry: registry.clone(),
        };
        let build = gauge_vec(
            "retagd_build_info",
            "The running retagd's version and the commit it was built from; always 1.",
            &["version", "revision"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("BUILT_REVISION")])
            .set(1);
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into memory fails only on a metric with invalid labels, which the fixed
        // families above cannot produce.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn set_info(
        &self,
        family: &'static str,
        pipeline: &str,
        stage: &str,
        labels: Option<Vec<String>>,
    ) {
        let vec = match family {
            STAGE_VERSION => &self.stage_version,
            _ => &self.pending,
        };
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        let key = (family, pipeline.to_string(), stage.to_string());
        if info.get(&key) == labels.as_ref() {
            return;
        }
        if let Some(old) = info.remove(&key) {
            let old: Vec<&str> = old.iter().map(String::as_str).collect();
            let _ = vec.remove_label_values(&old);
        }
        if let Some(new) = labels {
            let values: Vec<&str> = new.iter().map(String::as_str).collect();
            vec.with_label_values(&values).set(1);
            info.insert(key, new);
        }
    }

    /// Sets the stage's current version; `None` removes its series (no tag selected).
    pub fn stage_version(
        &self,
        pipeline: &str,
        stage: &str,
        registry: &str,
        repository: &str,
        current: Option<(&str, &str)>,
    ) {
        let labels = current.map(|(tag, digest)| {
            [pipeline, stage, registry, repository, tag, digest]
                .map(String::from)
                .to_vec()
        });
        self.set_info(STAGE_VERSION, pipeline, stage, labels);
    }

    /// Sets the stage's pending promotion (`from_tag`, `to_tag`, `digest`); `None` removes it.
    pub fn pending(&self, pipeline: &str, stage: &str, pending: Option<(&str, &str, &str)>) {
        let labels = pending.map(|(from, to, digest)| {
            [pipeline, stage, from, to, digest]
                .map(String::from)
                .to_vec()
        });
        self.set_info(PENDING, pipeline, stage, labels);
    }

    /// After a reload: removes the info series of stages not in `stages` (pipeline, stage), and
    /// the last-success time of pipelines without any, so no alert fires for what is gone.
    /// (Counters and histograms of removed pipelines stay: they no longer grow.)
    pub fn retain_stages(&self, stages: &BTreeSet<(String, String)>) {
        let mut seen = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|p| {
            let kept = stages.iter().any(|(sp, _)| sp == p);
            if !kept {
                let _ = self.last_success.remove_label_values(&[p.as_str()]);
                let _ = self.unrecorded.remove_label_values(&[p.as_str()]);
                self.ever_unrecorded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(p);
            }
            kept
        });
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(pipeline, stage)| {
            if stages.contains(&(pipeline.clone(), stage.clone())) {
                return true;
            }
            let _ = self.frozen.remove_label_values(&[pipeline, stage]);
            self.ever_frozen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(pipeline.clone(), stage.clone()));
            let _ = self.last_promotion.remove_label_values(&[pipeline, stage]);
            let _ = self.pending_since.remove_label_values(&[pipeline, stage]);
            for why in [Wait::Soak, Wait::Window].map(Wait::as_str) {
                let _ = self
                    .waiting_until
                    .remove_label_values(&[pipeline, stage, why]);
            }
            false
        });
        let mut drifted = self.drifted.lock().unwrap_or_else(|e| e.into_inner());
        drifted.retain(|(pipeline, stage, tag)| {
            let kept = stages.contains(&(pipeline.clone(), stage.clone()));
            if !kept {
                let _ = self.drift.remove_label_values(&[pipeline, stage, tag]);
            }
            kept
        });
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        info.retain(|(family, pipeline, stage), labels| {
            if stages.contains(&(pipeline.clone(), stage.clone())) {
                return true;
            }
            let vec = if *family == STAGE_VERSION {
                &self.stage_version
            } else {
                &self.pending
            };
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            let _ = vec.remove_label_values(&values);
            false
        });
    }

    /// Records what one reconcile saw and did: its duration and success, each stage's version
    /// and pending promotion, and each promotion tried.
    pub fn record(&self, outcome: &Outcome) {
        let name = outcome.pipeline.as_str();
        self.reconciled(name, outcome.duration, outcome.error_reason(), outcome.at);
        if let Ok(plan) = &outcome.plan {
            for st in &plan.stages {
                let current = st
                    .current
                    .as_ref()
                    .map(|c| (c.tag.as_str(), c.digest.as_str()));
                self.stage_version(name, &st.stage, &st.registry, &st.repository, current);
                let pending = match &st.action {
                    Action::Pending(p) => {
                        Some((p.from_tag.as_str(), p.to_tag.as_str(), p.digest.as_str()))
                    }
                    _ => None,
                };
                self.pending(name, &st.stage, pending);
                self.pending_since(
                    name,
                    &st.stage,
                    pending.map(|(_, _, d)| d),
                    unix(outcome.at),
                );
                self.holds(name, st);
                if let Action::Unverified { code, .. } = &st.action {
                    self.unverified
                        .with_label_values(&[name, &st.stage, code])
                        .inc();
                }
            }
        }
        for a in &outcome.applied {
            match &a.result {
                Ok(_) => {
                    self.promotion(name, &a.stage, "success", "");
                    self.last_promotion
                        .with_label_values(&[name, &a.stage])
                        .set(unix(outcome.at));
                }
                Err(e) => self.promotion(name, &a.stage, "failure", e.reason()),
            }
        }
        for r in &outcome.records {
            let result = if r.result.is_ok() {
                "written"
            } else {
                "failed"
            };
            self.records
                .with_label_values(&[name, &r.stage, result])
                .inc();
        }
        {
            let mut ever = self
                .ever_unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if outcome.unrecorded > 0 {
                ever.insert(name.to_string());
            }
            if ever.contains(name) {
                self.unrecorded
                    .with_label_values(&[name])
                    .set(i64::try_from(outcome.unrecorded).unwrap_or(i64::MAX));
            }
        }
        if outcome.plan.is_ok() {
            self.drift(name, &outcome.drift);
        }
        for c in &outcome.referrers {
            for (result, n) in [
                ("copied", c.report.written),
                ("failed", c.report.failures.len()),
            ] {
                let counter = self.referrers.with_label_values(&[name, &c.stage, result]);
                counter.inc_by(n as u64);
            }
        }
    }

    /// Sets `retagd_drift` to 1 for the pipeline's open drift, and to 0 for what was drifted
    /// before and is not now.
    fn drift(&self, pipeline: &str, drift: &[crate::engine::Drift]) {
        let mut drifted = self.drifted.lock().unwrap_or_else(|e| e.into_inner());
        let open: BTreeSet<(String, String, String)> = drift
            .iter()
            .filter(|d| d.open())
            .map(|d| (pipeline.to_string(), d.stage.clone(), d.tag.clone()))
            .collect();
        for key in drifted.iter().filter(|(p, _, _)| p == pipeline) {
            if !open.contains(key) {
                self.drift
                    .with_label_values(&[&key.0, &key.1, &key.2])
                    .set(0);
            }
        }
        for key in &open {
            self.drift
                .with_label_values(&[&key.0, &key.1, &key.2])
                .set(1);
        }
        drifted.extend(open);
    }

    /// Sets a promoted stage's freeze flag and when its held promotion goes ahead.
    fn holds(&self, pipeline: &str, st: &StagePlan) {
        if matches!(st.action, Action::Source) {
            return;
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((pipeline.to_string(), st.stage.clone()));
        {
            let key = (pipeline.to_string(), st.stage.clone());
            let mut ever = self.ever_frozen.lock().unwrap_or_else(|e| e.into_inner());
            if st.frozen.is_some() {
                ever.insert(key.clone());
            }
            if ever.contains(&key) {
                self.frozen
                    .with_label_values(&[pipeline, &st.stage])
                    .set(i64::from(st.frozen.is_some()));
            }
        }
        let waiting = match &st.action {
            Action::Waiting { until, why, .. } => Some((*until, why.as_str())),
            _ => None,
        };
        for why in [Wait::Soak, Wait::Window].map(Wait::as_str) {
            match waiting {
                Some((until, w)) if w == why => {
                    self.waiting_until
                        .with_label_values(&[pipeline, &st.stage, why])
                        .set(unix(until));
                }
                _ => {
                    let _ = self
                        .waiting_until
                        .remove_label_values(&[pipeline, &st.stage, why]);
                }
            }
        }
    }

    /// A configuration was loaded (`ok`) or refused; the first call (at start) counts no reload.
    pub fn config_loaded(&self, ok: bool) {
        let first = self.loaded_at.get() == 0.0;
        if ok {
            self.loaded_at.set(unix(SystemTime::now()));
        }
        if !first {
            self.reloads
                .with_label_values(&[if ok { "success" } else { "failure" }])
                .inc();
        }
    }

    /// Exports the counters of every configured stage at 0, so `increase()` and `rate()` see a
    /// first promotion or failure instead of a series that appears with it.
    pub fn known_stages(&self, pipelines: &[crate::config::Pipeline]) {
        for result in ["success", "failure"] {
            let _ = self.reloads.with_label_values(&[result]);
        }
        for p in pipelines {
            for s in p.stages.iter().filter(|s| s.promote.is_some()) {
                let _ = self
                    .promotions
                    .with_label_values(&[&p.name, &s.name, "success", ""]);
            }
        }
    }

    /// Sets the stage's pending-since time: when this candidate first showed as pending.
    fn pending_since(&self, pipeline: &str, stage: &str, digest: Option<&str>, at: f64) {
        let key = (pipeline.to_string(), stage.to_string());
        let mut seen = self.pending_seen.lock().unwrap_or_else(|e| e.into_inner());
        match digest {
            Some(d) => {
                let since = match seen.get(&key) {
                    Some((known, since)) if known == d => *since,
                    _ => at,
                };
                seen.insert(key, (d.to_string(), since));
                self.pending_since
                    .with_label_values(&[pipeline, stage])
                    .set(since);
            }
            None => {
                if seen.remove(&key).is_some() {
                    let _ = self.pending_since.remove_label_values(&[pipeline, stage]);
                }
            }
        }
    }

    /// Counts one promotion result (`success`, `failure` or `conflict`) with its reason (empty
    /// for a success).
    pub fn promotion(&self, pipeline: &str, stage: &str, result: &str, reason: &str) {
        self.promotions
            .with_label_values(&[pipeline, stage, result, reason])
            .inc();
    }

    /// Records one finished reconcile; `error` is the reason it did not succeed.
    fn reconciled(&self, pipeline: &str, duration: Duration, error: Option<&str>, at: SystemTime) {
        self.reconcile_duration
            .with_label_values(&[pipeline])
            .observe(duration.as_secs_f64());
        match error {
            None => {
                self.pipelines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(pipeline.to_string());
                self.last_success
                    .with_label_values(&[pipeline])
                    .set(unix(at));
            }
            Some(reason) => {
                self.reconcile_errors
                    .with_label_values(&[pipeline, reason])
                    .inc();
            }
        }
    }

    /// Counts one webhook by source and result.
    pub fn webhook(&self, source: &str, result: &str) {
        self.webhooks.with_label_values(&[source, result]).inc();
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are (0 for a clock before 1970).
fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Observer for Metrics {
    fn request(&self, registry: &str, method: &str, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.registry_requests
            .with_label_values(&[registry, method, &status])
            .inc();
        self.registry_duration
            .with_label_values(&[registry, method])
            .observe(elapsed.as_secs_f64());
    }

    fn retry(&self, registry: &str, reason: RetryReason, _delay: Duration) {
        self.retries
            .with_label_values(&[registry, reason.as_str()])
            .inc();
    }

    fn rate_limit_remaining(&self, registry: &str, remaining: u64) {
        self.rate_limit
            .with_label_values(&[registry])
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_new_version_replaces_the_stage_series() {
        let m = Metrics::new().unwrap();
        m.stage_version("p", "rc", "local", "app", Some(("v1-rc.1", "sha256:a")));
        m.stage_version("p", "rc", "local", "app", Some(("v1-rc.2", "sha256:b")));
        let text = m.encode();
        assert!(!text.contains("v1-rc.1"), "{text}");
        assert!(text.contains(r#"tag="v1-rc.2""#), "{text}");
        m.stage_version("p", "rc", "local", "app", None);
        assert!(!m.encode().contains("retagd_stage_version_info{"));
    }

    #[test]
    fn a_reload_removes_the_series_of_dropped_pipelines_and_stages() {
        let m = Metrics::new().unwrap();
        m.stage_version("gone", "dev", "r", "a", Some(("1", "sha256:a")));
        m.pending("gone", "prod", Some(("1-rc.1", "1", "sha256:a")));
        m.reconciled("gone", Duration::from_millis(5), None, SystemTime::now());
        m.stage_version("kept", "dev", "r", "b", Some(("2", "sha256:b")));
        m.stage_version("kept", "qa", "r", "b", Some(("2", "sha256:b")));
        let keep = BTreeSet::from([("kept".to_string(), "dev".to_string())]);
        m.retain_stages(&keep);
        let text = m.encode();
        assert!(
            !text.contains(r#"stage_version_info{digest="sha256:a""#),
            "{text}"
        );
        assert!(!text.contains(r#"stage="qa""#), "{text}");
        assert!(
            !text
                .contains(r#"retagd_last_successful_reconcile_timestamp_seconds{pipeline="gone"}"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"retagd_pending_promotion_info{"#),
            "{text}"
        );
        assert!(text.contains(r#"stage="dev""#), "{text}");
    }

    #[test]
    fn reloads_are_counted_after_the_first_load_and_pending_since_follows_the_candidate() {
        let m = Metrics::new().unwrap();
        m.config_loaded(true);
        let text = m.encode();
        assert!(
            text.contains("retagd_config_last_load_success_timestamp_seconds "),
            "{text}"
        );
        assert!(
            !text.contains(r#"retagd_config_reloads_total{result="success"} 1"#),
            "{text}"
        );
        m.known_stages(&[]);
        m.config_loaded(false);
        m.config_loaded(true);
        let text = m.encode();
        assert!(
            text.contains(r#"retagd_config_reloads_total{result="failure"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"retagd_config_reloads_total{result="success"} 1"#),
            "{text}"
        );

        let series = |m: &Metrics| {
            m.encode()
                .lines()
                .find(|l| l.starts_with("retagd_pending_promotion_since_timestamp_seconds{"))
                .map(str::to_string)
        };
        m.pending_since("p", "prod", Some("sha256:a"), 100.0);
        m.pending_since("p", "prod", Some("sha256:a"), 200.0);
        assert!(series(&m).unwrap().ends_with(" 100"), "{:?}", series(&m));
        m.pending_since("p", "prod", Some("sha256:b"), 300.0);
        assert!(series(&m).unwrap().ends_with(" 300"), "{:?}", series(&m));
        m.pending_since("p", "prod", None, 400.0);
        assert_eq!(series(&m), None);
    }
}
