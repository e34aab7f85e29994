//! Several hosts on one store (spec section 7): this host's lease, and which sensors and timers
//! it owns.
//!
//! Every [`RENEW_EVERY`] (and at once when the wanted work changes) a tick renews the lease on
//! the database's clock, reads the live hosts and the ownership rows, and computes who should own
//! what ([`assign`]: rendezvous hashing capped at an even share, so the spread stays within one
//! item and few items move when a host joins or leaves). It then stops and releases what is no
//! longer this host's, and only after that acquires what is newly its own (an item whose owner
//! released it or whose owner's lease ended), each acquisition raising the item's generation.
//! The work itself (the supervisor's poll loops, the timer scheduler) follows through [`Work`],
//! and every write it makes carries its [`Fence`], checked by the store in the same transaction.
//!
//! Self-fencing: the lease is counted from the moment its renewal was sent, on this host's
//! monotonic clock; when renewals fail past that, minus a margin, the host stops all its work
//! before any other host may take it over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::store::{Fence, HostRecord, OwnershipRecord, ROWS_PER_STATEMENT, Store, StoreError, WorkKind};

/// How long a lease lasts after each renewal.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the lease is renewed and ownership reconsidered.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A host stops its work this long before its lease could end.
const FENCE_MARGIN: Duration = Duration::from_millis(500);
/// How often a starting host retries while another run of its id still holds a lease.
const JOIN_RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "host id `{0}` is in use by a live host (its lease was renewed during the last {LEASE:?}); give this \
         host another --host-id"
    )]
    IdInUse(String),
    #[error(
        "{}: another host is using this SQLite file; SQLite serves one host (use PostgreSQL for several)",
        .0.display()
    )]
    SqliteInUse(PathBuf),
    #[error("{}: {error}", .path.display())]
    Lock { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Work a host runs for the items it owns. Told after items were acquired and before they are
/// released (or lost); each call names the items that changed.
#[async_trait::async_trait]
pub trait Work: Send + Sync {
    async fn start(&self, items: &[String]);
    async fn stop(&self, items: &[String]);
}

/// A host's copies of its packs (ref, fingerprint) to record, and whether they become the
/// registered ones.
type PackRecord = (Vec<(String, String)>, bool);

/// This host's lease and holdings; see the module docs.
pub struct Membership {
    store: Arc<dyn Store>,
    host_id: String,
    /// This run of the host: a new one replaces an earlier run's row and gives up its holdings.
    incarnation: String,
    metrics: Arc<Metrics>,
    /// The generation of each item this host owns.
    held: Mutex<HashMap<(WorkKind, String), i64>>,
    /// Items that should run somewhere, as this host sees them.
    wanted: Mutex<HashMap<WorkKind, BTreeSet<String>>>,
    /// Who owned what at the last tick (for `GET /sensors` and `GET /timers`).
    owners: Mutex<HashMap<(WorkKind, String), String>>,
    workers: Mutex<Vec<(WorkKind, Weak<dyn Work>)>>,
    /// This host's copies of its packs (ref, fingerprint) to record at the next round, and
    /// whether they become the registered copies.
    packs: Mutex<Option<PackRecord>>,
    /// Wakes the loop when the wanted items change, or another host released work.
    wake: Notify,
    /// Notified when this host released work, so the others can be told to take it at once.
    released: Notify,
    ticking: tokio::sync::Mutex<Lease>,
    /// Held during a renewal: leaving waits for it.
    renewing: tokio::sync::Mutex<()>,
    /// This run holds nothing from now on: it left, or another run of its id replaced it.
    done: std::sync::atomic::AtomicBool,
    /// When this host must have stopped its work unless renewed: a renewal's send time plus
    /// the lease, minus the margin.
    valid_until: Mutex<Option<Instant>>,
    /// Held while this host runs on a SQLite file, so a second host on it refuses to start.
    _sqlite_lock: Option<File>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("host_id", &self.host_id).finish_non_exhaustive()
    }
}

/// What the rounds keep between them.
#[derive(Debug, Default)]
struct Lease {
    /// Items whose ownership rows exist.
    registered: HashSet<(WorkKind, String)>,
    /// The packs this host's copy of differs from the registered one (logged when it changes).
    mismatched: BTreeSet<String>,
}

impl Membership {
    /// Joins the hosts sharing `store` as `host_id`, listening on `listen`. While another run of
    /// the id holds a lease, waits for it to end (a host killed a moment ago); if it is renewed
    /// meanwhile, that host is live and this one refuses to start. On SQLite (`sqlite_file`),
    /// first locks the file for this process.
    pub async fn join(
        store: Arc<dyn Store>,
        host_id: &str,
        listen: &str,
        sqlite_file: Option<&Path>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, JoinError> {
        let sqlite_lock = sqlite_file.map(lock_sqlite).transpose()?;
        let incarnation = uuid::Uuid::now_v7().simple().to_string();
        let give_up = Instant::now() + LEASE + JOIN_RETRY * 2;
        loop {
            let sent = Instant::now();
            if store.join(host_id, &incarnation, listen, LEASE).await? {
                let valid_until = Mutex::new(Some(sent + LEASE - FENCE_MARGIN));
                tracing::info!(host = host_id, "joined the hosts sharing the store");
                return Ok(Arc::new(Self {
                    store,
                    host_id: host_id.to_string(),
                    incarnation,
                    metrics,
                    held: Mutex::default(),
                    wanted: Mutex::default(),
                    owners: Mutex::default(),
                    workers: Mutex::default(),
                    wake: Notify::new(),
                    released: Notify::new(),
                    packs: Mutex::default(),
                    ticking: tokio::sync::Mutex::default(),
                    renewing: tokio::sync::Mutex::default(),
                    done: std::sync::atomic::AtomicBool::new(false),
                    valid_until,
                    _sqlite_lock: sqlite_lock,
                }));
            }
            if Instant::now() >= give_up {
                return Err(JoinError::IdInUse(host_id.to_string()));
            }
            tokio::time::sleep(JOIN_RETRY).await;
        }
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Registers the work run for items of `kind`; it is told of changes from the next tick on.
    pub fn attach(&self, kind: WorkKind, work: Weak<dyn Work>) {
        lock(&self.workers).push((kind, work));
    }

    /// Replaces the items of `kind` that should run somewhere; a change wakes the loop.
    pub fn set_wanted(&self, kind: WorkKind, items: BTreeSet<String>) {
        let mut wanted = lock(&self.wanted);
        if wanted.get(&kind) != Some(&items) {
            wanted.insert(kind, items);
            self.wake.notify_one();
        }
    }

    /// Adds or removes one wanted item of `kind`.
    pub fn want(&self, kind: WorkKind, item: &str, wanted: bool) {
        let mut all = lock(&self.wanted);
        let items = all.entry(kind).or_default();
        let changed = if wanted { items.insert(item.to_string()) } else { items.remove(item) };
        if changed {
            self.wake.notify_one();
        }
    }

    /// The fence of `item` while this host owns it.
    pub fn fence(&self, kind: WorkKind, item: &str) -> Option<Fence> {
        let generation = *lock(&self.held).get(&(kind, item.to_string()))?;
        Some(Fence { kind, item: item.to_string(), owner: self.host_id.clone(), generation })
    }

    /// Records this host's copies of its packs (ref, fingerprint) at the next round; with
    /// `register` (at start, and for a reload asked for on this host), they become the copies
    /// every host must hold to run the packs' sensors.
    pub fn set_packs(&self, packs: Vec<(String, String)>, register: bool) {
        *lock(&self.packs) = Some((packs, register));
        self.wake.notify_one();
    }

    /// Runs a round soon: another host released work or joined.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when this host released work at a round (not on [`Membership::leave`]).
    pub async fn released(&self) {
        self.released.notified().await;
    }

    /// Who owned `item` at the last tick.
    pub fn owner(&self, kind: WorkKind, item: &str) -> Option<String> {
        lock(&self.owners).get(&(kind, item.to_string())).cloned()
    }

    /// A write for `fence` was refused: the item is no longer this host's. Its work is stopped
    /// at once, and the next tick reads where it went.
    pub async fn lost(&self, fence: &Fence) {
        let removed = {
            let mut held = lock(&self.held);
            let key = (fence.kind, fence.item.clone());
            held.get(&key).is_some_and(|g| *g == fence.generation) && held.remove(&key).is_some()
        };
        if removed {
            self.metrics.ownership_changed(
                &self.host_id,
                fence.kind.as_str(),
                &fence.item,
                false,
                fence.generation,
                None,
            );
            self.tell(fence.kind, std::slice::from_ref(&fence.item), false).await;
            self.wake.notify_one();
        }
    }

    /// Renews the lease and ownership until aborted: every [`RENEW_EVERY`], and at once when
    /// the wanted items change. Beside it, a watchdog stops all work when the lease is about to
    /// end unrenewed, however long a round waits on the store.
    pub async fn run(self: Arc<Self>) {
        // Renewals on their own, so that a long round (thousands of items to take) never
        // delays one; both end with this task.
        let mut beside = tokio::task::JoinSet::new();
        beside.spawn({
            let this = self.clone();
            async move { this.watch_lease().await }
        });
        beside.spawn({
            let this = self.clone();
            async move {
                loop {
                    this.renew().await;
                    tokio::time::sleep(RENEW_EVERY).await;
                }
            }
        });
        loop {
            self.round().await;
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Stops all work at the moment the lease could end (minus the margin) unless renewed by
    /// then. Runs until aborted.
    async fn watch_lease(&self) {
        loop {
            let until = *lock(&self.valid_until);
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => tokio::time::sleep(RENEW_EVERY).await,
            }
            let expired = lock(&self.valid_until).is_some_and(|until| Instant::now() >= until);
            if expired {
                if !lock(&self.held).is_empty() {
                    tracing::error!(host = %self.host_id, "the lease was not renewed in time: stopping all work before it ends");
                    self.stop_everything().await;
                }
                tokio::time::sleep(RENEW_EVERY / 4).await;
            }
        }
    }

    /// A renewal, then a round.
    pub async fn tick(&self) {
        self.renew().await;
        self.round().await;
    }

    /// Renews the lease, bounded by [`RENEW_EVERY`] (the watchdog stops the work if renewals
    /// keep failing until the lease could end).
    async fn renew(&self) {
        let _one = self.renewing.lock().await;
        if self.done.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(RENEW_EVERY, self.store.renew(&self.host_id, &self.incarnation, LEASE))
            .await
            .unwrap_or_else(|_| Err(StoreError::Timeout("renewing the lease")));
        match renewed {
            Ok(true) => {
                self.metrics.lease_renewed(sent.elapsed());
                *lock(&self.valid_until) = Some(sent + LEASE - FENCE_MARGIN);
            }
            Ok(false) => {
                tracing::error!(host = %self.host_id, "another run of this host id replaced this one: stopping all work");
                self.done.store(true, std::sync::atomic::Ordering::SeqCst);
                self.stop_everything().await;
            }
            Err(e) => tracing::warn!(host = %self.host_id, "cannot renew the lease: {e}"),
        }
    }

    /// One round, while the lease holds: move ownership towards [`assign`]'s answer. Rounds
    /// are serialized, and never cut short (the work and what this host holds change together).
    async fn round(&self) {
        let mut lease = self.ticking.lock().await;
        let valid = lock(&self.valid_until).is_some_and(|until| Instant::now() < until);
        if self.done.load(std::sync::atomic::Ordering::SeqCst) || !valid {
            return;
        }
        if let Err(e) = self.rebalance(&mut lease).await {
            // Registered rows may not have been written: register again next time.
            lease.registered.clear();
            tracing::warn!(host = %self.host_id, "cannot update ownership: {e}");
        }
    }

    async fn rebalance(&self, lease: &mut Lease) -> Result<(), StoreError> {
        let pending = lock(&self.packs).clone();
        if let Some((packs, register)) = pending {
            self.store.record_packs(&self.host_id, &packs, register).await?;
            let mut recorded = lock(&self.packs);
            if recorded.as_ref().is_some_and(|r| r.0 == packs && r.1 == register) {
                *recorded = None;
            }
        }
        let copies = self.store.pack_copies().await?;
        let mismatched = copies.mismatched(&self.host_id);
        if mismatched != lease.mismatched {
            if !mismatched.is_empty() {
                tracing::warn!(host = %self.host_id, packs = ?mismatched, "this host's copy of these packs is not the one registered last: it runs none of their sensors");
            }
            lease.mismatched = mismatched;
        }
        let hosts: Vec<String> = self.store.live_hosts().await?.into_iter().map(|h: HostRecord| h.id).collect();
        for kind in WorkKind::ALL {
            let wanted: Vec<String> =
                lock(&self.wanted).get(&kind).map(|w| w.iter().cloned().collect()).unwrap_or_default();
            let new: Vec<String> =
                wanted.iter().filter(|i| !lease.registered.contains(&(kind, (*i).clone()))).cloned().collect();
            if !new.is_empty() {
                self.store.register(kind, &new).await?;
                lease.registered.extend(new.into_iter().map(|i| (kind, i)));
            }
            let rows = self.store.ownership(kind).await?;
            let plan = match kind {
                WorkKind::Sensor => assign(&wanted, &hosts, |item, host| copies.runs(host, pack_of(item))),
                WorkKind::Timer => assign(&wanted, &hosts, |_, _| true),
            };
            self.apply(kind, &rows, &plan, &hosts).await?;
        }
        Ok(())
    }

    /// Releases, then acquires, what `plan` moves for `kind`; records the owners seen.
    async fn apply(
        &self,
        kind: WorkKind,
        rows: &[OwnershipRecord],
        plan: &HashMap<&str, &str>,
        hosts: &[String],
    ) -> Result<(), StoreError> {
        let me = self.host_id.as_str();
        let live: HashSet<&str> = hosts.iter().map(String::as_str).collect();
        let mut release = Vec::new();
        let mut acquire = Vec::new();
        let mut keep = HashMap::new();
        for row in rows {
            let planned = plan.get(row.item.as_str()).copied();
            match row.owner.as_deref() {
                Some(owner) if owner == me => {
                    if planned == Some(me) {
                        keep.insert(row.item.clone(), row.generation);
                    } else {
                        release.push(row);
                    }
                }
                owner if planned == Some(me) && owner.is_none_or(|o| !live.contains(o)) => acquire.push(row),
                _ => {}
            }
        }
        // Bring the held items in line with the store: what it no longer gives this host (at
        // the generation this host took it) is lost; what it still gives this host and this
        // host is not running (it stopped everything while out of reach) resumes.
        let (lost, resumed) = {
            let mut held = lock(&self.held);
            let before: HashMap<String, i64> =
                held.iter().filter(|((k, _), _)| *k == kind).map(|((_, item), g)| (item.clone(), *g)).collect();
            held.retain(|(k, _), _| *k != kind);
            held.extend(keep.iter().map(|(item, g)| ((kind, item.clone()), *g)));
            let lost: Vec<(String, i64)> = before
                .iter()
                .filter(|(item, g)| keep.get(*item) != Some(g) && !release.iter().any(|r| &&r.item == item))
                .map(|(item, g)| (item.clone(), *g))
                .collect();
            let resumed: Vec<String> =
                keep.iter().filter(|(item, g)| before.get(*item) != Some(g)).map(|(item, _)| item.clone()).collect();
            (lost, resumed)
        };
        for (item, generation) in &lost {
            self.metrics.ownership_changed(&self.host_id, kind.as_str(), item, false, *generation, None);
        }
        let stopping: Vec<String> =
            lost.into_iter().map(|(item, _)| item).chain(release.iter().map(|r| r.item.clone())).collect();
        if !stopping.is_empty() {
            self.tell(kind, &stopping, false).await;
        }
        let giving_up: Vec<(String, i64)> = release.iter().map(|r| (r.item.clone(), r.generation)).collect();
        let generations: HashMap<&str, i64> = giving_up.iter().map(|(item, g)| (item.as_str(), *g)).collect();
        for item in self.store.release(kind, me, &giving_up).await? {
            let generation = generations.get(item.as_str()).copied().unwrap_or_default();
            self.metrics.ownership_changed(&self.host_id, kind.as_str(), &item, false, generation, None);
        }
        if !release.is_empty() {
            self.released.notify_one();
        }
        let mut started = resumed;
        let mut acquired = HashSet::new();
        let mut failed = None;
        let previous: HashMap<&str, Option<&str>> =
            acquire.iter().map(|r| (r.item.as_str(), r.owner.as_deref())).collect();
        let wanted: Vec<String> = acquire.iter().map(|r| r.item.clone()).collect();
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            match self.store.acquire(kind, chunk, me).await {
                Ok(taken) => {
                    for (item, generation) in taken {
                        let before = previous.get(item.as_str()).copied().flatten();
                        self.metrics.ownership_changed(&self.host_id, kind.as_str(), &item, true, generation, before);
                        lock(&self.held).insert((kind, item.clone()), generation);
                        started.push(item.clone());
                        acquired.insert(item);
                    }
                }
                // What was taken so far still starts below: held and running change together.
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // The watchdog may have stopped everything meanwhile: start only what is still held.
        started.retain(|item| lock(&self.held).contains_key(&(kind, item.clone())));
        if !started.is_empty() {
            self.tell(kind, &started, true).await;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let mut owners = lock(&self.owners);
        owners.retain(|(k, _), _| *k != kind);
        for row in rows {
            let owner = if acquired.contains(&row.item) { Some(me.to_string()) } else { row.owner.clone() };
            if let Some(owner) =
                owner.filter(|o| live.contains(o.as_str()) && !release.iter().any(|r| r.item == row.item))
            {
                owners.insert((kind, row.item.clone()), owner);
            }
        }
        let count = lock(&self.held).keys().filter(|(k, _)| *k == kind).count();
        self.metrics.set_owned(kind.as_str(), count);
        Ok(())
    }

    /// Stops all work this host holds, without touching the store (it may be out of reach).
    async fn stop_everything(&self) {
        let held: Vec<(WorkKind, String, i64)> =
            lock(&self.held).drain().map(|((kind, item), generation)| (kind, item, generation)).collect();
        lock(&self.owners).retain(|_, owner| owner != &self.host_id);
        for kind in WorkKind::ALL {
            let items: Vec<String> =
                held.iter().filter(|(k, ..)| *k == kind).map(|(_, item, _)| item.clone()).collect();
            for (_, item, generation) in held.iter().filter(|(k, ..)| *k == kind) {
                self.metrics.ownership_changed(&self.host_id, kind.as_str(), item, false, *generation, None);
            }
            if !items.is_empty() {
                self.tell(kind, &items, false).await;
            }
            self.metrics.set_owned(kind.as_str(), 0);
        }
    }

    /// A graceful stop: stops all work, then ends the lease and releases everything at once, so
    /// other hosts take over at their next tick. False when this run had left (or was replaced)
    /// already.
    pub async fn leave(&self) -> bool {
        let _round = self.ticking.lock().await;
        // No renewal in flight may extend the lease after it ended.
        let _renewal = self.renewing.lock().await;
        if self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.stop_everything().await;
        match self.store.leave(&self.host_id, &self.incarnation).await {
            Ok(()) => tracing::info!(host = %self.host_id, "left: everything this host owned is released"),
            Err(e) => {
                tracing::warn!(host = %self.host_id, "cannot release ownership on leaving ({e}); others take over when the lease ends")
            }
        }
        true
    }

    async fn tell(&self, kind: WorkKind, items: &[String], start: bool) {
        let workers: Vec<Arc<dyn Work>> =
            lock(&self.workers).iter().filter(|(k, _)| *k == kind).filter_map(|(_, w)| w.upgrade()).collect();
        for work in workers {
            if start {
                work.start(items).await;
            } else {
                work.stop(items).await;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks `<file>.lock` for this process (released when it exits, however it exits).
fn lock_sqlite(file: &Path) -> Result<File, JoinError> {
    let path = file.with_extension("db.lock");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| JoinError::Lock { path: path.clone(), error: e })?;
    }
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JoinError::Lock { path: path.clone(), error: e })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(JoinError::SqliteInUse(file.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(JoinError::Lock { path, error }),
    }
}

/// The pack of a sensor ref: what comes before its first dot.
fn pack_of(sensor_ref: &str) -> &str {
    sensor_ref.split_once('.').map_or(sensor_ref, |(pack, _)| pack)
}

/// Who should own each of `items` among `hosts`, each item only on a host `eligible` for it:
/// rendezvous hashing (each item goes to the eligible host ranking it highest) capped at an even
/// share (⌈items/hosts⌉; an item whose eligible hosts are all full goes to the least loaded of
/// them), items taken in a fixed order. Every host computes the same answer from the same
/// inputs, whatever their order. When a host joins, the items it ranks highest move to it; when
/// one leaves, only its items move.
pub fn assign<'a>(
    items: &'a [String],
    hosts: &'a [String],
    eligible: impl Fn(&str, &str) -> bool,
) -> HashMap<&'a str, &'a str> {
    let mut hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut plan = HashMap::with_capacity(items.len());
    if hosts.is_empty() {
        return plan;
    }
    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
    items.sort_unstable();
    items.dedup();
    let cap = items.len().div_ceil(hosts.len());
    let mut load = vec![0usize; hosts.len()];
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(hosts.len());
    for item in items {
        ranked.clear();
        ranked.extend(
            hosts.iter().enumerate().filter(|(_, host)| eligible(item, host)).map(|(i, host)| (score(host, item), i)),
        );
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let under_cap = ranked.iter().find(|(_, i)| load[*i] < cap);
        if let Some(&(_, chosen)) = under_cap.or_else(|| ranked.iter().min_by_key(|(_, i)| load[*i])) {
            load[chosen] += 1;
            plan.insert(item, hosts[chosen]);
        }
    }
    plan
}

/// A stable 64-bit score of (host, item): FNV-1a, then a SplitMix64 finish for good mixing.
fn score(host: &str, item: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in host.bytes().chain([0xff]).chain(item.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn loads(plan: &HashMap<&str, &str>, hosts: &[String]) -> Vec<usize> {
        hosts.iter().map(|h| plan.values().filter(|o| **o == h.as_str()).count()).collect()
    }

    #[test]
    fn every_item_gets_one_host_and_the_spread_is_within_one_share() {
        for (n_items, n_hosts) in [(30, 3), (30, 4), (10_000, 20), (7, 3), (1, 5)] {
            let (items, hosts) = (names("pack.sensor", n_items), names("h", n_hosts));
            let plan = assign(&items, &hosts, |_, _| true);
            assert_eq!(plan.len(), n_items);
            let loads = loads(&plan, &hosts);
            let cap = n_items.div_ceil(n_hosts);
            assert!(loads.iter().all(|l| *l <= cap), "{loads:?} over the cap {cap}");
            if n_items >= 10 * n_hosts {
                let (most, least) = (*loads.iter().max().unwrap(), *loads.iter().min().unwrap());
                assert!(most as f64 <= 1.5 * least as f64, "{n_items} items on {n_hosts} hosts: {loads:?}");
            }
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_inputs() {
        let (items, hosts) = (names("s", 100), names("h", 5));
        let (mut items_reversed, mut hosts_reversed) = (items.clone(), hosts.clone());
        items_reversed.reverse();
        hosts_reversed.reverse();
        assert_eq!(assign(&items, &hosts, |_, _| true), assign(&items_reversed, &hosts_reversed, |_, _| true));
    }

    #[test]
    fn items_go_only_to_eligible_hosts() {
        let (items, hosts) = (names("pack.s", 30), names("h", 3));
        // h0 holds another copy of the pack: the other two share its sensors evenly.
        let plan = assign(&items, &hosts, |_, host| host != "h0");
        assert_eq!(loads(&plan, &hosts), [0, 15, 15]);
        assert!(assign(&items, &hosts, |_, _| false).is_empty());
    }

    #[test]
    fn few_items_move_when_a_host_joins_or_leaves() {
        let items = names("pack.sensor", 10_000);
        let hosts = names("h", 20);
        let before = assign(&items, &hosts, |_, _| true);
        let moved = |after: &HashMap<&str, &str>| before.iter().filter(|(i, h)| after.get(*i) != Some(h)).count();

        let mut joined = hosts.clone();
        joined.push("h20".into());
        let after_join = moved(&assign(&items, &joined, |_, _| true));
        let left: Vec<String> = hosts.iter().filter(|h| *h != "h7").cloned().collect();
        let after_leave = moved(&assign(&items, &left, |_, _| true));
        // Ideal: 1/21 of the items (476) on a join, the leaver's 500 on a leave.
        assert!(after_join < 10_000 * 3 / 21, "{after_join} items moved when one host joined");
        assert!(after_leave < 500 * 3, "{after_leave} items moved when one host left");
    }
}
