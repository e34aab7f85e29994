//! One tokio task that runs every timer: a `BTreeSet` of (next wake-up, timer) pairs and a single
//! `sleep_until` on the earliest. Store and sink calls run in short-lived tasks (fires due together
//! share a task, up to 64, called concurrently; at most one call per timer at a time), so a slow sink
//! never delays other timers' wake-ups.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::SchedulerError;
use crate::spec::{MisfirePolicy, Schedule, TimerSpec};
use crate::store::{Fire, FireSink, TimerState, TimerStore};
use crate::time::{Clock, micros, trunc_micros};

/// Every scheduler knob, with its default.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A planned instant fired at most this late is on time; a later one is a misfire, handled by
    /// the timer's `misfire` policy. Default 1 s: well above normal lateness (milliseconds) and a
    /// busy host's hiccups, well below any interval a user would call "missed".
    pub misfire_grace: Duration,
    /// First wait before retrying a fire the sink refused, or a state load that failed; doubles
    /// per failure up to `max_retry_backoff`. Default 500 ms.
    pub retry_backoff: Duration,
    /// Longest wait between retries. Default 30 s.
    pub max_retry_backoff: Duration,
    /// Capacity of the queue from handles to the scheduler task (callers wait when it is full).
    /// Default 1,024.
    pub command_queue: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            misfire_grace: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(30),
            command_queue: 1024,
        }
    }
}

/// Starts the scheduler task.
#[derive(Debug)]
pub struct Scheduler;

impl Scheduler {
    /// Spawns the one scheduler task and returns a handle to it. Must be called inside a tokio
    /// runtime. The task ends on [`SchedulerHandle::shutdown`] or when every handle is dropped.
    pub fn start(
        store: Arc<dyn TimerStore>,
        sink: Arc<dyn FireSink>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> SchedulerHandle {
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
        let len = Arc::new(AtomicUsize::new(0));
        let core = Core {
            store,
            sink,
            clock,
            config,
            entries: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::new(),
            queue: BTreeSet::new(),
            done_tx,
            fire_buffer: Vec::new(),
            in_flight: 0,
            len: len.clone(),
        };
        tokio::spawn(core.run(cmd_rx, done_rx));
        SchedulerHandle { tx: cmd_tx, len }
    }
}

/// A cheap, cloneable handle to the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    len: Arc<AtomicUsize>,
}

impl SchedulerHandle {
    /// Starts the timer of `rule_ref`, or changes it. Returns once the timer runs on `spec`:
    ///
    /// * new timer: after its stored state was loaded and missed instants (if any) were handed to
    ///   the misfire policy; `Err(SchedulerError::Store)` if the load failed (retried in the
    ///   background);
    /// * same spec as running: nothing changes (re-applying all rules is cheap and safe);
    /// * changed spec: at once. The next instant is planned from now on the new schedule
    ///   (an interval without `anchor` restarts: first fire one interval from now); the execution
    ///   count and last fire are kept; nothing counts as missed.
    pub async fn upsert(&self, rule_ref: &str, spec: TimerSpec) -> Result<(), SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Upsert { rule_ref: Arc::from(rule_ref), spec, reply }).await?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// Stops the timer of `rule_ref` (rule disabled): no new fire starts after this returns. The
    /// stored state is kept with no next instant, so re-enabling does not treat the pause as missed
    /// instants, keeps the execution count, and never re-fires a one-shot that fired. Returns
    /// whether a timer was running.
    pub async fn remove(&self, rule_ref: &str) -> Result<bool, SchedulerError> {
        self.remove_inner(rule_ref, false).await
    }

    /// Stops the timer of `rule_ref` and deletes its stored state (rule deleted). Returns whether a
    /// timer was running.
    pub async fn purge(&self, rule_ref: &str) -> Result<bool, SchedulerError> {
        self.remove_inner(rule_ref, true).await
    }

    /// Stops the timer of `rule_ref` and leaves its stored state exactly as it is (another
    /// host takes the timer over from it). Returns whether a timer was running.
    pub async fn release(&self, rule_ref: &str) -> Result<bool, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove { rule_ref: Arc::from(rule_ref), purge: false, release: true, reply }).await?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    async fn remove_inner(&self, rule_ref: &str, purge: bool) -> Result<bool, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove { rule_ref: Arc::from(rule_ref), purge, release: false, reply }).await?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    /// The state of a running timer (`next_fire_at` is the next planned instant), `None` when
    /// `rule_ref` has no running timer or it is still loading.
    pub async fn state(&self, rule_ref: &str) -> Result<Option<TimerState>, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::State { rule_ref: Arc::from(rule_ref), reply }).await?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    /// Number of timers (upserted and not removed).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether there are no timers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the scheduler: no new fire starts; returns once fires and store calls in flight have
    /// finished. Later calls on any handle return [`SchedulerError::Stopped`].
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), SchedulerError> {
        self.tx.send(command).await.map_err(|_| SchedulerError::Stopped)
    }
}

type UpsertReply = oneshot::Sender<Result<(), SchedulerError>>;

enum Command {
    Upsert { rule_ref: Arc<str>, spec: TimerSpec, reply: UpsertReply },
    Remove { rule_ref: Arc<str>, purge: bool, release: bool, reply: oneshot::Sender<bool> },
    State { rule_ref: Arc<str>, reply: oneshot::Sender<Option<TimerState>> },
    Shutdown { reply: oneshot::Sender<()> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the stored state (load in flight, or waiting to retry one).
    Loading,
    /// Scheduled.
    Active,
    /// Its removal (state save or delete) is in flight or done.
    Removing,
}

struct Entry {
    rule_ref: Arc<str>,
    /// The spec of the last upsert, as given.
    given: TimerSpec,
    /// `given` with an interval's default anchor fixed (shared with fire tasks).
    spec: Arc<TimerSpec>,
    /// False once a remove was asked for.
    wanted: bool,
    purge: bool,
    /// Removed to be taken over elsewhere: its stored state is left as it is.
    release: bool,
    phase: Phase,
    /// A store or sink call for this timer is in flight.
    busy: bool,
    state: TimerState,
    /// The first planned instant not fired yet.
    next: Option<DateTime<Utc>>,
    /// Do nothing before this (retry of a failed load or fire).
    retry_at: Option<DateTime<Utc>>,
    /// `next` was refused by the sink: fire it however late it is.
    retrying: bool,
    backoff: Duration,
    /// The schedule changed while a fire was in flight: its outcome must not move `next`.
    rescheduled: bool,
    /// `next` changed since the state was last saved.
    dirty: bool,
    /// Misfired instants fired in a row (for `catch_up`'s maximum).
    streak: u32,
    /// What the last removal did: `Some(true)` deleted the state, `Some(false)` kept it.
    removed_by: Option<bool>,
    /// Key of this timer in the wake-up queue.
    queued: Option<i64>,
    waiters: Vec<UpsertReply>,
}

impl Entry {
    /// A wanted timer, waiting for its stored state.
    fn new(rule_ref: Arc<str>, spec: TimerSpec, backoff: Duration, waiters: Vec<UpsertReply>) -> Entry {
        Entry {
            rule_ref,
            spec: Arc::new(spec.clone()),
            given: spec,
            wanted: true,
            purge: false,
            release: false,
            phase: Phase::Loading,
            busy: false,
            state: TimerState::default(),
            next: None,
            retry_at: None,
            retrying: false,
            backoff,
            rescheduled: false,
            dirty: false,
            streak: 0,
            removed_by: None,
            queued: None,
            waiters,
        }
    }
}

enum Outcome {
    Loaded(Result<Option<TimerState>, String>),
    Saved(Result<(), String>),
    Deleted(Result<(), String>),
    Fired { scheduled_at: DateTime<Utc>, state_after: TimerState, sink: Result<(), String>, save: Result<(), String> },
}

struct Done {
    slot: usize,
    outcome: Outcome,
}

/// Sends the outcomes of a task's operations, or `fallback` (one per operation) if it panicked.
struct DoneGuard {
    tx: Option<mpsc::UnboundedSender<Vec<Done>>>,
    fallback: Vec<Done>,
}

impl DoneGuard {
    fn finish(mut self, outcomes: Vec<Done>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(outcomes);
        }
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(std::mem::take(&mut self.fallback));
        }
    }
}

/// A fire waiting to be handed to a task.
struct FireJob {
    slot: usize,
    spec: Arc<TimerSpec>,
    rule_ref: Arc<str>,
    scheduled_at: DateTime<Utc>,
    fired_at: DateTime<Utc>,
    execution_count: u64,
}

/// Fires handed to one task at most: the task calls the sink for all of them concurrently.
const FIRE_BATCH: usize = 64;

/// Polls all `futures` concurrently on the current task (small batches only: every wake-up polls
/// every pending future).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

struct Core {
    store: Arc<dyn TimerStore>,
    sink: Arc<dyn FireSink>,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    entries: Vec<Option<Entry>>,
    free_slots: Vec<usize>,
    index: HashMap<Arc<str>, usize>,
    /// (wake-up time in Unix µs, slot).
    queue: BTreeSet<(i64, usize)>,
    done_tx: mpsc::UnboundedSender<Vec<Done>>,
    /// Fires dispatched during this turn of the loop, handed to tasks at its end.
    fire_buffer: Vec<FireJob>,
    /// Operations started and not finished.
    in_flight: usize,
    len: Arc<AtomicUsize>,
}

fn one_micro() -> TimeDelta {
    TimeDelta::microseconds(1)
}

/// Where a timer starts from its stored state: the spec with an interval's anchor fixed, and the
/// first planned instant not fired yet (at or before `now` when instants were missed while down).
fn resume(given: &TimerSpec, stored: Option<&TimerState>, now: DateTime<Utc>) -> (TimerSpec, Option<DateTime<Utc>>) {
    if let Schedule::Once(once) = given.schedule() {
        let at = once.fire_at();
        let fired = stored.is_some_and(|s| s.last_scheduled_at == Some(at));
        // Stopped by `remove` while its time passed: the user paused it, nothing was missed.
        let paused = stored.is_some_and(|s| s.next_fire_at.is_none());
        let next = if fired || (paused && at <= now) { None } else { Some(at) };
        return (given.clone(), next);
    }
    // A stored next instant more than one interval ahead can only come from a longer interval
    // (the rule changed while the host was down, or the clock went back): start afresh.
    let too_far = |next: DateTime<Utc>| match given.schedule() {
        Schedule::Interval(interval) if interval.anchor().is_none() => {
            next - now > TimeDelta::seconds(i64::try_from(interval.interval_seconds()).unwrap_or(i64::MAX))
        }
        _ => false,
    };
    match stored.and_then(|s| s.next_fire_at.filter(|n| !too_far(*n)).map(|next| (next, s.last_scheduled_at))) {
        Some((next, last)) => {
            let spec = given.clone().with_default_anchor(next);
            let floor = match last {
                Some(last) => last.max(next - one_micro()),
                None => next - one_micro(),
            };
            let next = spec.next_after(floor);
            (spec, next)
        }
        None => fresh(given, None, now),
    }
}

/// A schedule starting now (new timer, changed spec, re-enabled timer).
fn fresh(given: &TimerSpec, state: Option<&TimerState>, now: DateTime<Utc>) -> (TimerSpec, Option<DateTime<Utc>>) {
    if let Schedule::Once(once) = given.schedule() {
        let fired = state.is_some_and(|s| s.last_scheduled_at == Some(once.fire_at()));
        return (given.clone(), (!fired).then_some(once.fire_at()));
    }
    let spec = given.clone().started_at(now);
    let next = spec.next_after(now);
    (spec, next)
}

impl Core {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>, mut done_rx: mpsc::UnboundedReceiver<Vec<Done>>) {
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        // The queue key the sleep is armed for.
        let mut armed: Option<i64> = None;
        let shutdown_reply = loop {
            self.flush_fires();
            let first = self.queue.first().map(|&(key, _)| key);
            if first != armed {
                if let Some(key) = first {
                    sleep.as_mut().reset(self.deadline(key));
                }
                armed = first;
            }
            tokio::select! {
                biased;
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.on_wake();
                }
                Some(batch) = done_rx.recv() => {
                    for done in batch {
                        self.on_done(done);
                    }
                    while let Ok(batch) = done_rx.try_recv() {
                        for done in batch {
                            self.on_done(done);
                        }
                    }
                }
                command = cmd_rx.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
            }
        };
        // Let calls in flight finish; start nothing new.
        self.flush_fires();
        while self.in_flight > 0 {
            match done_rx.recv().await {
                Some(batch) => self.in_flight = self.in_flight.saturating_sub(batch.len()),
                None => break,
            }
        }
        tracing::debug!(timers = self.index.len(), "timer scheduler stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn now(&self) -> DateTime<Utc> {
        trunc_micros(self.clock.now())
    }

    fn deadline(&self, key: i64) -> Instant {
        let at = DateTime::from_timestamp_micros(key).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let deadline = self.clock.deadline(at);
        match self.clock.max_wait() {
            Some(max) => deadline.min(Instant::now() + max),
            None => deadline,
        }
    }

    fn entry(&mut self, slot: usize) -> Option<&mut Entry> {
        self.entries.get_mut(slot).and_then(Option::as_mut)
    }

    fn on_wake(&mut self) {
        let now = micros(self.now());
        while let Some(&(key, slot)) = self.queue.first() {
            if key > now {
                break;
            }
            self.queue.pop_first();
            if let Some(entry) = self.entry(slot) {
                entry.queued = None;
            }
            self.drive(slot);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Upsert { rule_ref, spec, reply } => self.upsert(rule_ref, spec, reply),
            Command::Remove { rule_ref, purge, release, reply } => {
                let existed = self.remove(rule_ref, purge, release);
                let _ = reply.send(existed);
            }
            Command::State { rule_ref, reply } => {
                let state =
                    self.index.get(&rule_ref).and_then(|&slot| self.entries.get(slot)?.as_ref()).and_then(|e| {
                        (e.wanted && e.phase == Phase::Active).then_some(TimerState { next_fire_at: e.next, ..e.state })
                    });
                let _ = reply.send(state);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn upsert(&mut self, rule_ref: Arc<str>, spec: TimerSpec, reply: UpsertReply) {
        let Some(&slot) = self.index.get(&rule_ref) else {
            let entry = Entry::new(rule_ref.clone(), spec, self.config.retry_backoff, vec![reply]);
            let slot = self.insert(entry);
            self.len.fetch_add(1, Ordering::Relaxed);
            self.drive(slot);
            return;
        };
        let len = self.len.clone();
        let Some(entry) = self.entry(slot) else { return };
        let revived = !entry.wanted;
        entry.wanted = true;
        entry.purge = false;
        entry.release = false;
        let changed = entry.given != spec;
        entry.given = spec;
        if revived {
            len.fetch_add(1, Ordering::Relaxed);
        }
        match entry.phase {
            Phase::Loading | Phase::Removing => {
                entry.waiters.push(reply);
                self.drive(slot);
            }
            Phase::Active => {
                if changed {
                    self.reschedule(slot);
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Applies a changed spec to an active timer at once.
    fn reschedule(&mut self, slot: usize) {
        let now = self.now();
        let Some(entry) = self.entry(slot) else { return };
        let (spec, next) = fresh(&entry.given, Some(&entry.state), now);
        tracing::info!(rule = %entry.rule_ref, next = ?next, "timer schedule changed");
        entry.spec = Arc::new(spec);
        entry.next = next;
        entry.dirty = true;
        entry.retrying = false;
        entry.retry_at = None;
        entry.streak = 0;
        if entry.busy {
            entry.rescheduled = true;
        } else {
            self.dequeue(slot);
            self.drive(slot);
        }
    }

    fn remove(&mut self, rule_ref: Arc<str>, purge: bool, release: bool) -> bool {
        let slot = match self.index.get(&rule_ref) {
            Some(&slot) => slot,
            None if purge => {
                // No running timer, but stored state may exist: delete it through an entry, so a
                // quick re-upsert waits for the delete.
                let mut entry =
                    Entry::new(rule_ref.clone(), TimerSpec::placeholder(), self.config.retry_backoff, Vec::new());
                entry.wanted = false;
                entry.purge = true;
                let slot = self.insert(entry);
                self.drive(slot);
                return false;
            }
            None => return false,
        };
        let Some(entry) = self.entry(slot) else { return false };
        let existed = entry.wanted;
        entry.wanted = false;
        entry.purge |= purge;
        entry.release = release && !entry.purge;
        if existed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        self.dequeue(slot);
        self.drive(slot);
        existed
    }

    /// Stores a new entry in a free slot and indexes it.
    fn insert(&mut self, entry: Entry) -> usize {
        let rule_ref = entry.rule_ref.clone();
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        if let Some(place) = self.entries.get_mut(slot) {
            *place = Some(entry);
        }
        self.index.insert(rule_ref, slot);
        slot
    }

    fn enqueue(&mut self, slot: usize, at: DateTime<Utc>) {
        self.dequeue(slot);
        let key = micros(at);
        if let Some(entry) = self.entry(slot) {
            entry.queued = Some(key);
            self.queue.insert((key, slot));
        }
    }

    fn dequeue(&mut self, slot: usize) {
        if let Some(key) = self.entry(slot).and_then(|e| e.queued.take()) {
            self.queue.remove(&(key, slot));
        }
    }

    fn free(&mut self, slot: usize) {
        self.dequeue(slot);
        if let Some(entry) = self.entries.get_mut(slot).and_then(Option::take) {
            self.index.remove(&entry.rule_ref);
            for waiter in entry.waiters {
                let _ = waiter.send(Ok(()));
            }
            self.free_slots.push(slot);
        }
    }

    /// Moves a timer that has no call in flight towards what was asked for.
    fn drive(&mut self, slot: usize) {
        let now = self.now();
        let Some(entry) = self.entry(slot) else { return };
        if entry.busy {
            return;
        }
        match (entry.phase, entry.wanted) {
            (Phase::Loading, true) => {
                if let Some(at) = entry.retry_at {
                    if at > now {
                        self.enqueue(slot, at);
                        return;
                    }
                    entry.retry_at = None;
                }
                self.spawn_load(slot);
            }
            (Phase::Loading, false) => {
                if entry.purge {
                    entry.phase = Phase::Removing;
                    entry.removed_by = Some(true);
                    self.spawn_delete(slot);
                } else {
                    self.free(slot);
                }
            }
            (Phase::Active, false) if entry.release => self.free(slot),
            (Phase::Active, false) => {
                entry.phase = Phase::Removing;
                if entry.purge {
                    entry.removed_by = Some(true);
                    self.spawn_delete(slot);
                } else {
                    entry.removed_by = Some(false);
                    entry.state.next_fire_at = None;
                    entry.next = None;
                    let state = entry.state;
                    self.spawn_save(slot, state);
                }
            }
            (Phase::Removing, false) => {
                if entry.purge && entry.removed_by == Some(false) {
                    entry.removed_by = Some(true);
                    self.spawn_delete(slot);
                } else {
                    self.free(slot);
                }
            }
            (Phase::Removing, true) => {
                // Upserted again while its removal was in flight.
                if entry.removed_by == Some(true) {
                    entry.phase = Phase::Loading;
                    entry.state = TimerState::default();
                    self.drive(slot);
                } else {
                    let state = entry.state;
                    self.activate(slot, Some(state));
                }
            }
            (Phase::Active, true) => {
                if let Some(at) = entry.retry_at {
                    if at > now {
                        self.enqueue(slot, at);
                        return;
                    }
                    entry.retry_at = None;
                }
                match entry.next {
                    Some(next) if next <= now => self.fire_due(slot, now),
                    _ if entry.dirty => {
                        entry.dirty = false;
                        let state = TimerState { next_fire_at: entry.next, ..entry.state };
                        self.spawn_save(slot, state);
                    }
                    Some(next) => self.enqueue(slot, next),
                    None => {}
                }
            }
        }
    }

    /// Starts a timer on its loaded state.
    fn activate(&mut self, slot: usize, stored: Option<TimerState>) {
        let now = self.now();
        let Some(entry) = self.entry(slot) else { return };
        let (spec, next) = resume(&entry.given, stored.as_ref(), now);
        entry.spec = Arc::new(spec);
        entry.next = next;
        entry.state = stored.unwrap_or_default();
        entry.dirty = stored.is_none() || entry.state.next_fire_at != next;
        entry.phase = Phase::Active;
        entry.retrying = false;
        entry.retry_at = None;
        entry.streak = 0;
        entry.removed_by = None;
        if let Some(next) = next.filter(|n| *n < now) {
            tracing::info!(rule = %entry.rule_ref, first_missed = %next, misfire = %entry.spec.misfire(),
                "timer missed instants while stopped");
        }
        for waiter in entry.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        self.drive(slot);
    }

    /// `next` is due: fire it, or apply the misfire policy when it is late beyond the grace.
    fn fire_due(&mut self, slot: usize, now: DateTime<Utc>) {
        let grace = TimeDelta::from_std(self.config.misfire_grace).unwrap_or(TimeDelta::MAX);
        let Some(entry) = self.entry(slot) else { return };
        let Some(due) = entry.next else { return };
        if entry.retrying || now - due <= grace {
            if !entry.retrying {
                entry.streak = 0;
            }
            self.dispatch(slot, due);
            return;
        }
        match entry.spec.misfire() {
            MisfirePolicy::FireOnce => {
                let latest = entry.spec.latest_between(due, now).unwrap_or(due);
                tracing::warn!(rule = %entry.rule_ref, first_missed = %due, fired_for = %latest,
                    "timer missed instants; firing once for the latest (misfire: fire_once)");
                self.dispatch(slot, latest);
            }
            MisfirePolicy::CatchUp if entry.streak < entry.spec.max_catch_up() => {
                entry.streak += 1;
                self.dispatch(slot, due);
            }
            policy => {
                // Skip, or catch-up past its maximum: resume at the first instant still on time.
                let resume_from = now - grace - one_micro();
                let next = entry.spec.next_after(resume_from.max(due));
                tracing::warn!(rule = %entry.rule_ref, first_skipped = %due, next = ?next, misfire = %policy,
                    "timer skipped missed instants");
                entry.next = next;
                entry.dirty = true;
                entry.streak = 0;
                self.drive(slot);
            }
        }
    }

    /// Fires planned instant `scheduled_at`: the sink first, then the store.
    fn dispatch(&mut self, slot: usize, scheduled_at: DateTime<Utc>) {
        let fired_at = self.now();
        let Some(entry) = self.entry(slot) else { return };
        let job = FireJob {
            slot,
            spec: entry.spec.clone(),
            rule_ref: entry.rule_ref.clone(),
            scheduled_at,
            fired_at,
            execution_count: entry.state.execution_count + 1,
        };
        entry.dirty = false;
        entry.rescheduled = false;
        entry.busy = true;
        self.in_flight += 1;
        self.fire_buffer.push(job);
    }

    /// Hands the fires dispatched this turn to tasks, [`FIRE_BATCH`] per task, where the payload
    /// is built and the sink called first, then (only once the sink accepted) the store.
    fn flush_fires(&mut self) {
        while !self.fire_buffer.is_empty() {
            let take = self.fire_buffer.len().min(FIRE_BATCH);
            let jobs: Vec<FireJob> = self.fire_buffer.drain(..take).collect();
            let fallback = jobs
                .iter()
                .map(|job| Done {
                    slot: job.slot,
                    outcome: Outcome::Fired {
                        scheduled_at: job.scheduled_at,
                        state_after: TimerState::default(),
                        sink: Err("sink panicked".to_owned()),
                        save: Ok(()),
                    },
                })
                .collect();
            let guard = DoneGuard { tx: Some(self.done_tx.clone()), fallback };
            let (sink, store) = (self.sink.clone(), self.store.clone());
            tokio::spawn(async move {
                let calls = jobs.into_iter().map(|job| {
                    let (sink, store) = (sink.clone(), store.clone());
                    async move {
                        let FireJob { slot, spec, rule_ref, scheduled_at, fired_at, execution_count } = job;
                        let state_after = TimerState {
                            next_fire_at: spec.next_after(scheduled_at),
                            last_fire_at: Some(fired_at),
                            last_scheduled_at: Some(scheduled_at),
                            execution_count,
                        };
                        let fire = Fire {
                            rule_ref: rule_ref.clone(),
                            trigger_ref: spec.trigger_ref(),
                            scheduled_at,
                            payload: spec.payload(scheduled_at, fired_at, execution_count),
                            state_after,
                        };
                        let sink = sink.fire(fire).await.map_err(|e| e.to_string());
                        let save = match sink {
                            Ok(()) => store.save(&rule_ref, &state_after).await.map_err(|e| e.to_string()),
                            Err(_) => Ok(()),
                        };
                        Done { slot, outcome: Outcome::Fired { scheduled_at, state_after, sink, save } }
                    }
                });
                let outcomes = join_all(calls.collect()).await;
                guard.finish(outcomes);
            });
        }
    }

    fn spawn_load(&mut self, slot: usize) {
        let store = self.store.clone();
        let Some(entry) = self.entry(slot) else { return };
        let rule_ref = entry.rule_ref.clone();
        self.spawn_op(slot, Outcome::Loaded(Err("store panicked".to_owned())), async move {
            Outcome::Loaded(store.load(&rule_ref).await.map_err(|e| e.to_string()))
        });
    }

    fn spawn_save(&mut self, slot: usize, state: TimerState) {
        let store = self.store.clone();
        let Some(entry) = self.entry(slot) else { return };
        let rule_ref = entry.rule_ref.clone();
        self.spawn_op(slot, Outcome::Saved(Err("store panicked".to_owned())), async move {
            Outcome::Saved(store.save(&rule_ref, &state).await.map_err(|e| e.to_string()))
        });
    }

    fn spawn_delete(&mut self, slot: usize) {
        let store = self.store.clone();
        let Some(entry) = self.entry(slot) else { return };
        let rule_ref = entry.rule_ref.clone();
        self.spawn_op(slot, Outcome::Deleted(Err("store panicked".to_owned())), async move {
            Outcome::Deleted(store.delete(&rule_ref).await.map_err(|e| e.to_string()))
        });
    }

    fn spawn_op<F>(&mut self, slot: usize, fallback: Outcome, op: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let Some(entry) = self.entry(slot) else { return };
        entry.busy = true;
        self.in_flight += 1;
        let guard = DoneGuard { tx: Some(self.done_tx.clone()), fallback: vec![Done { slot, outcome: fallback }] };
        tokio::spawn(async move {
            let outcome = op.await;
            guard.finish(vec![Done { slot, outcome }]);
        });
    }

    fn on_done(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = self.now();
        let slot = done.slot;
        let (base_backoff, max_backoff) = (self.config.retry_backoff, self.config.max_retry_backoff);
        let Some(entry) = self.entry(slot) else { return };
        entry.busy = false;
        match done.outcome {
            Outcome::Loaded(Ok(stored)) => {
                entry.backoff = base_backoff;
                self.activate(slot, stored);
                return;
            }
            Outcome::Loaded(Err(message)) => {
                tracing::error!(rule = %entry.rule_ref, error = %message, retry_in = ?entry.backoff,
                    "could not load timer state");
                entry.retry_at = Some(now + TimeDelta::from_std(entry.backoff).unwrap_or(TimeDelta::MAX));
                entry.backoff = (entry.backoff * 2).min(max_backoff);
                for waiter in entry.waiters.drain(..) {
                    let _ = waiter.send(Err(SchedulerError::Store {
                        rule_ref: entry.rule_ref.to_string(),
                        message: message.clone(),
                    }));
                }
            }
            Outcome::Saved(result) | Outcome::Deleted(result) => {
                if let Err(message) = result {
                    // The next fire's save carries the state again; a crash before it can only repeat
                    // an instant, which the sink's dedup key absorbs.
                    tracing::error!(rule = %entry.rule_ref, error = %message, "could not store timer state");
                }
            }
            Outcome::Fired { scheduled_at, state_after, sink, save } => match sink {
                Ok(()) => {
                    let next = if entry.rescheduled { entry.next } else { state_after.next_fire_at };
                    entry.dirty |= next != state_after.next_fire_at;
                    entry.state = state_after;
                    entry.next = next;
                    entry.retrying = false;
                    entry.backoff = base_backoff;
                    if let Err(message) = save {
                        tracing::error!(rule = %entry.rule_ref, error = %message, scheduled_at = %scheduled_at,
                            "timer fired but its state could not be stored");
                    }
                }
                Err(message) => {
                    tracing::warn!(rule = %entry.rule_ref, error = %message, scheduled_at = %scheduled_at,
                        retry_in = ?entry.backoff, "timer fire refused by the sink; will retry the same instant");
                    if !entry.rescheduled {
                        entry.next = Some(scheduled_at);
                        entry.retrying = true;
                        entry.retry_at = Some(now + TimeDelta::from_std(entry.backoff).unwrap_or(TimeDelta::MAX));
                        entry.backoff = (entry.backoff * 2).min(max_backoff);
                    }
                }
            },
        }
        if let Some(entry) = self.entry(slot) {
            entry.rescheduled = false;
        }
        self.drive(slot);
    }
}
