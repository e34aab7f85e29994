//! Prometheus metrics of one host, served by `GET /metrics`: per sensor (polls, failures by
//! reason, traps, fuel, payloads, poll duration and lateness), the pipeline (events,
//! enforcements, outbox backlog), the bus (publish duration), timers (fire lateness) and
//! membership (work owned, ownership changes, fence rejections, lease renewal latency).
//!
//! Labels are bounded: sensor refs come from loaded packs, reasons and sources are fixed words.
//!
//! Each method is one thing that happened; where it deserves a log line, the method writes the
//! line too (fields before the message), so a log line and its metric never drift apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_bus::{BoxFuture, Bus, BusError, Delivery, Message};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::EnforcementStatus;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabel {
    sensor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    sensor: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 0.5 ms to 10 s: poll durations and lateness are mostly well under 10 ms, and
/// 10 ms is a target, so the buckets are finer below it.
fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
}

/// All metrics of one host, registered once; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    polls: Family<SensorLabel, Counter>,
    failures: Family<ReasonLabel, Counter>,
    traps: Family<ReasonLabel, Counter>,
    fuel: Family<SensorLabel, Counter>,
    payloads: Family<SensorLabel, Counter>,
    quarantined: Family<SensorLabel, Gauge>,
    poll_duration: Histograms<SensorLabel>,
    poll_lateness: Histograms<SensorLabel>,
    events: Family<SourceLabel, Counter>,
    rejected: Family<SourceLabel, Counter>,
    enforcements: Family<StatusLabel, Counter>,
    outbox_backlog: Gauge,
    published: Counter,
    publish_failures: Counter,
    publish_duration: Histogram,
    timer_lateness: Histogram,
    owned: Family<KindLabel, Gauge>,
    ownership_changes: Family<KindLabel, Counter>,
    fence_rejections: Family<SourceLabel, Counter>,
    lease_renewal: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let histograms = || Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
        let mut metrics = Self {
            registry: Registry::with_prefix("attune"),
            polls: Family::default(),
            failures: Family::default(),
            traps: Family::default(),
            fuel: Family::default(),
            payloads: Family::default(),
            quarantined: Family::default(),
            poll_duration: histograms(),
            poll_lateness: histograms(),
            events: Family::default(),
            rejected: Family::default(),
            enforcements: Family::default(),
            outbox_backlog: Gauge::default(),
            published: Counter::default(),
            publish_failures: Counter::default(),
            publish_duration: latency_histogram(),
            timer_lateness: latency_histogram(),
            owned: Family::default(),
            ownership_changes: Family::default(),
            fence_rejections: Family::default(),
            lease_renewal: latency_histogram(),
        };
        let r = &mut metrics.registry;
        r.register("sensor_polls", "Sensor polls, failed ones included", metrics.polls.clone());
        r.register("sensor_failures", "Failed polls and starts by reason", metrics.failures.clone());
        r.register("sensor_traps", "Polls that trapped (out_of_fuel, memory_limit, ..)", metrics.traps.clone());
        r.register("sensor_fuel_used", "Fuel consumed by successful polls", metrics.fuel.clone());
        r.register("sensor_payloads", "Payloads accepted from the sensor", metrics.payloads.clone());
        r.register("sensor_quarantined", "1 while the sensor is quarantined", metrics.quarantined.clone());
        r.register_with_unit(
            "sensor_poll_duration",
            "Time in the sensor's poll call",
            Unit::Seconds,
            metrics.poll_duration.clone(),
        );
        r.register_with_unit(
            "sensor_poll_lateness",
            "How much later than planned a poll started",
            Unit::Seconds,
            metrics.poll_lateness.clone(),
        );
        r.register("events", "Events stored, by source (sensor, timer, webhook, api)", metrics.events.clone());
        r.register("events_rejected", "Payload batches refused by the event generator", metrics.rejected.clone());
        r.register("enforcements", "Enforcements stored, by status", metrics.enforcements.clone());
        r.register("outbox_backlog", "Outbox messages not yet confirmed by the bus", metrics.outbox_backlog.clone());
        r.register("bus_published", "Messages the bus confirmed", metrics.published.clone());
        r.register("bus_publish_failures", "Messages the bus did not confirm", metrics.publish_failures.clone());
        r.register_with_unit(
            "bus_publish_duration",
            "Time to publish one batch and get its confirms",
            Unit::Seconds,
            metrics.publish_duration.clone(),
        );
        r.register_with_unit(
            "timer_lateness",
            "How much later than its planned instant a timer fire was stored",
            Unit::Seconds,
            metrics.timer_lateness.clone(),
        );
        r.register("owned", "Sensors and timers this host owns, by kind", metrics.owned.clone());
        r.register(
            "ownership_changes",
            "Sensors and timers this host took or gave up, by kind",
            metrics.ownership_changes.clone(),
        );
        r.register(
            "fence_rejections",
            "Writes refused because this host's ownership of their work had ended, by source",
            metrics.fence_rejections.clone(),
        );
        r.register_with_unit(
            "lease_renewal",
            "Time to renew this host's lease in the store",
            Unit::Seconds,
            metrics.lease_renewal.clone(),
        );
        metrics
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A poll (or a start) of `sensor` that succeeded.
    pub fn poll_succeeded(&self, sensor: &str, payloads: usize, fuel: u64, duration: Duration) {
        let label = SensorLabel { sensor: sensor.to_string() };
        self.polls.get_or_create(&label).inc();
        self.payloads.get_or_create(&label).inc_by(payloads as u64);
        self.fuel.get_or_create(&label).inc_by(fuel);
        self.poll_duration.get_or_create(&label).observe(duration.as_secs_f64());
    }

    /// A failed poll or start of `sensor`, with its short reason (`out_of_fuel`, ...), the
    /// length of its run of failures and the message; logged at warn.
    pub fn poll_failed(&self, sensor: &str, failure: &PollFailure<'_>, duration: Duration) {
        let PollFailure { reason, trapped, consecutive, message } = *failure;
        tracing::warn!(sensor, reason, failures = consecutive, "poll failed: {message}");
        let label = SensorLabel { sensor: sensor.to_string() };
        self.polls.get_or_create(&label).inc();
        self.poll_duration.get_or_create(&label).observe(duration.as_secs_f64());
        let reason = ReasonLabel { sensor: sensor.to_string(), reason: reason.to_string() };
        self.failures.get_or_create(&reason).inc();
        if trapped {
            self.traps.get_or_create(&reason).inc();
        }
    }

    pub fn poll_late(&self, sensor: &str, lateness: Duration) {
        self.poll_lateness.get_or_create(&SensorLabel { sensor: sensor.to_string() }).observe(lateness.as_secs_f64());
    }

    /// `sensor` quarantined after `failures` consecutive failures; logged at error.
    pub fn quarantined(&self, sensor: &str, failures: u32) {
        tracing::error!(sensor, failures, "sensor quarantined after {failures} consecutive failures");
        self.quarantined.get_or_create(&SensorLabel { sensor: sensor.to_string() }).set(1);
    }

    /// `sensor` is no longer quarantined (restarted, or removed by a pack reload).
    pub fn quarantine_lifted(&self, sensor: &str) {
        self.quarantined.get_or_create(&SensorLabel { sensor: sensor.to_string() }).set(0);
    }

    /// What one stored ingest added: its events and its scheduled enforcements.
    pub fn ingested(&self, source: &'static str, events: usize, scheduled: usize) {
        self.events.get_or_create(&SourceLabel { source }).inc_by(events as u64);
        self.enforcements
            .get_or_create(&StatusLabel { status: EnforcementStatus::Scheduled.as_str() })
            .inc_by(scheduled as u64);
    }

    /// A stored enforcement whose action parameters could not be rendered; logged at warn.
    pub fn enforcement_failed(&self, rule: &str, event: &str, error: &str) {
        tracing::warn!(rule, event, "enforcement failed: {error}");
        self.enforcements.get_or_create(&StatusLabel { status: EnforcementStatus::Failed.as_str() }).inc();
    }

    pub fn rejected(&self, source: &'static str) {
        self.rejected.get_or_create(&SourceLabel { source }).inc();
    }

    pub fn set_outbox_backlog(&self, rows: i64) {
        self.outbox_backlog.set(rows);
    }

    pub fn timer_fired(&self, lateness: Duration) {
        self.timer_lateness.observe(lateness.as_secs_f64());
    }

    /// A write for work this host no longer owns was refused by its fence.
    pub fn fence_rejected(&self, source: &'static str) {
        self.fence_rejections.get_or_create(&SourceLabel { source }).inc();
        tracing::warn!(source, "a write was refused: this host no longer owns its work");
    }

    pub fn lease_renewed(&self, duration: Duration) {
        self.lease_renewal.observe(duration.as_secs_f64());
    }

    /// This host took (`gained`) or gave up one piece of work; logged once per change.
    pub fn ownership_changed(
        &self,
        host: &str,
        kind: &'static str,
        item: &str,
        gained: bool,
        generation: i64,
        previous: Option<&str>,
    ) {
        self.ownership_changes.get_or_create(&KindLabel { kind }).inc();
        if gained {
            let previous_owner = previous.unwrap_or("none");
            tracing::info!(kind, item, generation, previous_owner, new_owner = host, "took ownership");
        } else {
            tracing::info!(kind, item, generation, owner = host, "gave up ownership");
        }
    }

    pub fn set_owned(&self, kind: &'static str, count: usize) {
        self.owned.get_or_create(&KindLabel { kind }).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// Why a poll failed, as [`Metrics::poll_failed`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct PollFailure<'a> {
    /// Bounded label: `out_of_fuel`, `payload_rejected`, `start_failed`, ...
    pub reason: &'a str,
    /// The instance trapped and is replaced.
    pub trapped: bool,
    /// Failures in a row, this one included.
    pub consecutive: u32,
    pub message: &'a str,
}

/// A bus that records publish duration and confirms in [`Metrics`], then delegates.
#[derive(Debug)]
pub struct MeasuredBus {
    pub inner: Arc<dyn Bus>,
    pub metrics: Arc<Metrics>,
}

impl Bus for MeasuredBus {
    fn publish_batch<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Vec<Result<(), BusError>>> {
        Box::pin(async move {
            let started = Instant::now();
            let results = self.inner.publish_batch(messages).await;
            if !messages.is_empty() {
                self.metrics.publish_duration.observe(started.elapsed().as_secs_f64());
            }
            let confirmed = results.iter().filter(|r| r.is_ok()).count() as u64;
            self.metrics.published.inc_by(confirmed);
            self.metrics.publish_failures.inc_by(results.len() as u64 - confirmed);
            results
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.ready()
    }

    fn listen(&self, pattern: &str) -> tokio::sync::mpsc::Receiver<Delivery> {
        self.inner.listen(pattern)
    }
}
