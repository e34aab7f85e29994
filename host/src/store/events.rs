//! Events, enforcements and the outbox: the commit path every pipeline step writes through, the
//! relay's reads of unpublished messages, and the newest-first lists the API pages through.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::{Database, QueryBuilder};

use super::rules::{CREATE_RULE, DELETE_RULE, RuleWrite, StoredRule, UPSERT_RULE};
use super::sensor_state::{DELETE_STATE, UPSERT_STATE};
use super::sensor_status::{RESTART_STATUS, StatusWrite, UPSERT_STATUS};
use super::sql::{Bind, MAX_PAGE, PgStore, ROWS_PER_INSERT, SqliteStore, db_now};
use super::{Fence, Message, OutboxRow, ReplayRecord, StoreError, Written};
use crate::sandbox::StateDelta;
use attune_bus::Body;

/// A stored event: one payload, accepted for one trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// UUIDv7: unique across hosts, ordered by creation time.
    pub id: String,
    pub trigger_ref: String,
    /// The rule instance it is for (only that rule sees it); `None`: every rule on the trigger.
    pub rule_ref: Option<String>,
    /// Where it came from: `sensor:<ref>`, `timer:<rule>`, `webhook`, `api:<token>`.
    pub source: String,
    pub payload: Value,
    /// Unix microseconds.
    pub created_at: i64,
}

/// A rule matched an event: one per (rule, event), whatever happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnforcementRecord {
    /// Derived from (rule, event), so writing the same enforcement twice is a no-op.
    pub id: String,
    pub rule_ref: String,
    pub event_id: String,
    pub trigger_ref: String,
    pub action_ref: String,
    /// Resolved action parameters; `None` when resolving them failed (see `error`).
    pub parameters: Option<Value>,
    pub status: EnforcementStatus,
    pub error: Option<String>,
    pub created_at: i64,
}

/// What became of an enforcement. Stored (and serialized) as [`as_str`](Self::as_str).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Its parameters were resolved and it was published for an executor.
    Scheduled,
    /// Its parameters could not be resolved (see the enforcement's `error`); nothing was published.
    Failed,
}

impl EnforcementStatus {
    /// `scheduled` or `failed`: the stored text, the API's and the metrics label's.
    pub const fn as_str(self) -> &'static str {
        match self {
            EnforcementStatus::Scheduled => "scheduled",
            EnforcementStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for EnforcementStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EnforcementStatus {
    type Err = UnknownEnforcementStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scheduled" => Ok(EnforcementStatus::Scheduled),
            "failed" => Ok(EnforcementStatus::Failed),
            other => Err(UnknownEnforcementStatus(other.to_string())),
        }
    }
}

/// Text that is no [`EnforcementStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown enforcement status `{0}`: expected `scheduled` or `failed`")]
pub struct UnknownEnforcementStatus(pub String);

/// Everything one pipeline step writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The sensor whose state writes are in `state`.
    pub sensor_ref: Option<String>,
    pub state: StateDelta,
    pub events: Vec<EventRecord>,
    pub enforcements: Vec<EnforcementRecord>,
    pub outbox: Vec<Message>,
    /// Outbox rows the broker confirmed. Marked through the same writer as everything else, so
    /// the relay never contends with the pipeline for SQLite's single write lock.
    pub published: Vec<i64>,
    /// The answer these writes make to a request with a key, claimed first: when its key is
    /// taken already, nothing of this commit is written (see `replays.rs`).
    pub replay: Option<ReplayRecord>,
    /// Rule changes, written with the `rule.*` messages that announce them in `outbox`: a
    /// change is never stored without its announcement, nor announced without being stored.
    pub rules: Vec<RuleWrite>,
    /// The ownership of the sensor or timer these writes are for: nothing of them is written
    /// unless it still holds (see `membership.rs`).
    pub fence: Option<Fence>,
    /// Sensor status changes (see `sensor_status.rs`).
    pub statuses: Vec<StatusWrite>,
}

/// A page of a list query, newest first. `before` is an id cursor from the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub trigger_ref: Option<String>,
    /// Enforcements only; event lists ignore it.
    pub rule_ref: Option<String>,
    /// Unix microseconds, inclusive.
    pub since: Option<i64>,
    /// Unix microseconds, exclusive.
    pub until: Option<i64>,
    pub before: Option<String>,
    pub limit: u32,
}

/// Events, enforcements and the outbox.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Writes every commit in one transaction: all or nothing. Returns what became of each
    /// commit, in order: a commit whose replay key was taken writes nothing. Outbox rows are
    /// written claimed by host `publisher` (see [`EventStore::claim_unpublished`]); `None` leaves
    /// them for any host to claim.
    async fn write(&self, commits: &[Commit], publisher: Option<&str>) -> Result<Vec<Written>, StoreError>;

    /// Unpublished outbox rows for host `claimer` to publish, oldest first, so that each is
    /// published by one host: those it wrote or claimed, then, with `orphans`, rows nobody
    /// claimed and those of hosts whose lease ended, claimed now.
    async fn claim_unpublished(&self, claimer: &str, limit: u32, orphans: bool) -> Result<Vec<OutboxRow>, StoreError>;
    /// Marks rows published; called only after the broker confirmed them.
    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError>;
    async fn outbox_backlog(&self) -> Result<i64, StoreError>;

    async fn events(&self, filter: &ListFilter) -> Result<Vec<EventRecord>, StoreError>;
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError>;
    async fn enforcements(&self, filter: &ListFilter) -> Result<Vec<EnforcementRecord>, StoreError>;
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: String,
    trigger_ref: String,
    rule_ref: Option<String>,
    source: String,
    payload: String,
    created_at: i64,
}

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let EventRow { id, trigger_ref, rule_ref, source, payload, created_at } = row;
        Ok(EventRecord { id, trigger_ref, rule_ref, source, payload: serde_json::from_str(&payload)?, created_at })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct EnforcementRow {
    id: String,
    rule_ref: String,
    event_id: String,
    trigger_ref: String,
    action_ref: String,
    parameters: Option<String>,
    status: String,
    error: Option<String>,
    created_at: i64,
}

impl TryFrom<EnforcementRow> for EnforcementRecord {
    type Error = StoreError;

    fn try_from(row: EnforcementRow) -> Result<Self, StoreError> {
        let EnforcementRow { id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at } =
            row;
        Ok(EnforcementRecord {
            id,
            rule_ref,
            event_id,
            trigger_ref,
            action_ref,
            parameters: parameters.map(|p| serde_json::from_str(&p)).transpose()?,
            status: status.parse()?,
            error,
            created_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct UnpublishedRow {
    id: i64,
    message_id: String,
    routing_key: String,
    body: String,
}

impl TryFrom<UnpublishedRow> for OutboxRow {
    type Error = StoreError;

    fn try_from(row: UnpublishedRow) -> Result<Self, StoreError> {
        let UnpublishedRow { id, message_id, routing_key, body } = row;
        Ok(OutboxRow { id, message: Message { message_id, routing_key, body: Body::from_stored(body) } })
    }
}

/// `SELECT <every events column> FROM events` followed by `$rest`, as one literal.
macro_rules! select_events {
    ($rest:literal) => {
        concat!("SELECT id, trigger_ref, rule_ref, source, payload, created_at FROM events", $rest)
    };
}

const LIST_ENFORCEMENTS: &str = "SELECT id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, \
                                 created_at FROM enforcements WHERE 1 = 1";
/// The unpublished rows host `$1` wrote or claimed, up to `$2`, oldest first: a plain read, as
/// every row a host's pipeline writes is claimed by it in the same insert.
const OWN_UNPUBLISHED: &str = "SELECT id, message_id, routing_key, body FROM outbox WHERE published_at IS NULL \
                               AND claimed_by = $1 ORDER BY id LIMIT $2";
/// Unpublished rows that are nobody's: unclaimed, or claimed by a host whose lease ended.
macro_rules! orphaned {
    ($dialect:ident) => {
        concat!(
            "published_at IS NULL AND (claimed_by IS NULL OR claimed_by NOT IN \
             (SELECT id FROM hosts WHERE lease_until > ",
            db_now!($dialect),
            "))"
        )
    };
}
/// 1 when some unpublished row is nobody's, else 0: read first, so that a relay round takes no
/// write lock (SQLite's is the pipeline writer's) unless there is something to claim.
macro_rules! any_orphaned {
    ($dialect:ident) => {
        concat!("SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE ", orphaned!($dialect), " LIMIT 1) AS orphaned")
    };
}
/// Claims up to `$2` rows that are nobody's for host `$1`. On PostgreSQL, rows another host is
/// claiming right now are skipped.
macro_rules! claim_orphaned {
    ($dialect:ident, $skip_locked:literal) => {
        concat!(
            "UPDATE outbox SET claimed_by = $1 WHERE id IN (SELECT id FROM outbox WHERE ",
            orphaned!($dialect),
            " ORDER BY id LIMIT $2",
            $skip_locked,
            ") RETURNING id, message_id, routing_key, body"
        )
    };
}
const OUTBOX_BACKLOG: &str = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL";

fn insert_events<DB>(events: &[&EventRecord]) -> QueryBuilder<DB>
where
    DB: Database,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    i64: Bind<DB>,
{
    let mut insert = QueryBuilder::new("INSERT INTO events (id, trigger_ref, rule_ref, source, payload, created_at) ");
    insert.push_values(events, |mut row, e| {
        row.push_bind(e.id.clone())
            .push_bind(e.trigger_ref.clone())
            .push_bind(e.rule_ref.clone())
            .push_bind(e.source.clone())
            .push_bind(e.payload.to_string())
            .push_bind(e.created_at);
    });
    // Timer events have ids derived from their scheduled instant: a replayed fire is a no-op.
    insert.push(" ON CONFLICT (id) DO NOTHING");
    insert
}

fn insert_enforcements<DB>(enforcements: &[&EnforcementRecord]) -> QueryBuilder<DB>
where
    DB: Database,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    &'static str: Bind<DB>,
    i64: Bind<DB>,
{
    let mut insert = QueryBuilder::new(
        "INSERT INTO enforcements (id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at) ",
    );
    insert.push_values(enforcements, |mut row, e| {
        row.push_bind(e.id.clone())
            .push_bind(e.rule_ref.clone())
            .push_bind(e.event_id.clone())
            .push_bind(e.trigger_ref.clone())
            .push_bind(e.action_ref.clone())
            .push_bind(e.parameters.as_ref().map(ToString::to_string))
            .push_bind(e.status.as_str())
            .push_bind(e.error.clone())
            .push_bind(e.created_at);
    });
    // One enforcement per (rule, event), whose id is derived from both: a replay writes nothing new.
    insert.push(" ON CONFLICT (id) DO NOTHING");
    insert
}

/// Rows claimed by `publisher` as they are written: the host that wrote them publishes them.
fn insert_outbox<DB>(messages: &[&Message], now: i64, publisher: Option<&str>) -> QueryBuilder<DB>
where
    DB: Database,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    i64: Bind<DB>,
{
    let mut insert = QueryBuilder::new("INSERT INTO outbox (message_id, routing_key, body, created_at, claimed_by) ");
    insert.push_values(messages, |mut row, m| {
        row.push_bind(m.message_id.clone())
            .push_bind(m.routing_key.clone())
            .push_bind(m.body.as_str().to_owned())
            .push_bind(now)
            .push_bind(publisher.map(str::to_owned));
    });
    insert.push(" ON CONFLICT (message_id) DO NOTHING");
    insert
}

fn mark_outbox_published<DB>(ids: &[i64], now: i64) -> QueryBuilder<DB>
where
    DB: Database,
    i64: Bind<DB>,
{
    let mut update = QueryBuilder::new("UPDATE outbox SET published_at = ");
    update.push_bind(now).push(" WHERE id IN (");
    let mut list = update.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    update.push(")");
    update
}

/// `select` (whose WHERE clause is open) narrowed by `filter`, newest first.
fn list<DB>(select: &'static str, filter: &ListFilter) -> QueryBuilder<DB>
where
    DB: Database,
    String: Bind<DB>,
    i64: Bind<DB>,
{
    let mut query = QueryBuilder::new(select);
    if let Some(trigger_ref) = &filter.trigger_ref {
        query.push(" AND trigger_ref = ").push_bind(trigger_ref.clone());
    }
    if let Some(rule_ref) = &filter.rule_ref {
        query.push(" AND rule_ref = ").push_bind(rule_ref.clone());
    }
    if let Some(since) = filter.since {
        query.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND created_at < ").push_bind(until);
    }
    if let Some(before) = &filter.before {
        query.push(" AND id < ").push_bind(before.clone());
    }
    // Ids are UUIDv7 text: newest first is id order.
    query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit.clamp(1, MAX_PAGE)));
    query
}

/// `statement` (`$1` ref .. `$6` time) for `rule`, written at `now`.
fn rule_query<'q, DB>(statement: &'q str, rule: &'q StoredRule, now: i64) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    bool: Bind<DB>,
    i64: Bind<DB>,
{
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(rule.rule_ref.clone())
        .bind(rule.pack_ref.clone())
        .bind(rule.trigger_ref.clone())
        .bind(rule.enabled)
        .bind(rule.spec.to_string())
        .bind(now)
}

macro_rules! impl_event_store {
    ($store:ty, $db:ty, $dialect:ident, $skip_locked:literal) => {
        #[async_trait::async_trait]
        impl EventStore for $store {
            async fn write(&self, commits: &[Commit], publisher: Option<&str>) -> Result<Vec<Written>, StoreError> {
                let mut tx = self.begin_write().await?;
                // A commit whose fence no longer holds (see `membership.rs`) or whose replay key
                // is taken (see `replays.rs`) writes nothing.
                let mut outcome = vec![Written::Stored; commits.len()];
                // Fences checked (and their rows share-locked) in (kind, item) order, the order
                // in which releasing locks them: two transactions never wait on each other.
                let mut fenced: Vec<(usize, &Fence)> =
                    commits.iter().enumerate().filter_map(|(i, c)| Some((i, c.fence.as_ref()?))).collect();
                fenced.sort_by(|(_, a), (_, b)| (a.kind.as_str(), &a.item).cmp(&(b.kind.as_str(), &b.item)));
                for (index, fence) in fenced {
                    if !Self::fence_holds(&mut *tx, fence).await? {
                        outcome[index] = Written::Fenced;
                    }
                }
                Self::claim_replays(&mut tx, commits, &mut outcome).await?;
                // A rule created here exists nowhere else: a commit creating a taken ref is taken.
                let now = super::now_micros();
                for (commit, written) in commits.iter().zip(outcome.iter_mut()) {
                    for write in &commit.rules {
                        if let RuleWrite::Create(rule) = write
                            && *written == Written::Stored
                            && rule_query(CREATE_RULE, rule, now).execute(&mut *tx).await?.rows_affected() == 0
                        {
                            *written = Written::Taken;
                        }
                    }
                }
                let kept: Vec<&Commit> =
                    commits.iter().zip(&outcome).filter(|(_, w)| **w == Written::Stored).map(|(c, _)| c).collect();
                let commits = kept.as_slice();
                // Rows this transaction wrote; a replayed row (same id) is not among them.
                let mut written: HashSet<String> = HashSet::new();
                let events: Vec<&EventRecord> = commits.iter().flat_map(|c| &c.events).collect();
                for chunk in events.chunks(ROWS_PER_INSERT) {
                    let mut insert = insert_events::<$db>(chunk);
                    insert.push(" RETURNING id");
                    written.extend(insert.build_query_scalar::<String>().fetch_all(&mut *tx).await?);
                }
                let enforcements: Vec<&EnforcementRecord> = commits.iter().flat_map(|c| &c.enforcements).collect();
                for chunk in enforcements.chunks(ROWS_PER_INSERT) {
                    let mut insert = insert_enforcements::<$db>(chunk);
                    insert.push(" RETURNING id");
                    written.extend(insert.build_query_scalar::<String>().fetch_all(&mut *tx).await?);
                }
                // A message announcing an event or an enforcement (its message id is the row's
                // id) is queued only with its row: a replay queues nothing.
                let rows: HashSet<&str> =
                    events.iter().map(|e| e.id.as_str()).chain(enforcements.iter().map(|e| e.id.as_str())).collect();
                let outbox: Vec<&Message> = commits
                    .iter()
                    .flat_map(|c| &c.outbox)
                    .filter(|m| !rows.contains(m.message_id.as_str()) || written.contains(&m.message_id))
                    .collect();
                for chunk in outbox.chunks(ROWS_PER_INSERT) {
                    insert_outbox::<$db>(chunk, now, publisher).build().execute(&mut *tx).await?;
                }
                for write in commits.iter().flat_map(|c| &c.rules) {
                    let query = match write {
                        RuleWrite::Upsert(rule) => rule_query(UPSERT_RULE, rule, now),
                        // Written before everything else, above.
                        RuleWrite::Create(_) => continue,
                        RuleWrite::Delete(rule_ref) => sqlx::query(DELETE_RULE).bind(rule_ref),
                    };
                    query.execute(&mut *tx).await?;
                }
                for commit in commits {
                    let Some(sensor_ref) = &commit.sensor_ref else { continue };
                    for (key, value) in &commit.state {
                        let write = match value {
                            Some(value) => sqlx::query(UPSERT_STATE).bind(sensor_ref).bind(key).bind(value),
                            None => sqlx::query(DELETE_STATE).bind(sensor_ref).bind(key),
                        };
                        write.execute(&mut *tx).await?;
                    }
                }
                for write in commits.iter().flat_map(|c| &c.statuses) {
                    let query = match write {
                        StatusWrite::Snapshot(s) => sqlx::query(UPSERT_STATUS)
                            .bind(&s.sensor_ref)
                            .bind(&s.state)
                            .bind(&s.last_error)
                            .bind(&s.last_failure_reason)
                            .bind(s.consecutive_failures)
                            .bind(s.polls)
                            .bind(s.failures)
                            .bind(s.events)
                            .bind(s.fuel_used)
                            .bind(now),
                        StatusWrite::Restart(sensor_ref) => sqlx::query(RESTART_STATUS).bind(sensor_ref).bind(now),
                    };
                    query.execute(&mut *tx).await?;
                }
                let published: Vec<i64> = commits.iter().flat_map(|c| c.published.iter().copied()).collect();
                for chunk in published.chunks(ROWS_PER_INSERT) {
                    mark_outbox_published::<$db>(chunk, now).build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }

            async fn claim_unpublished(
                &self,
                claimer: &str,
                limit: u32,
                orphans: bool,
            ) -> Result<Vec<OutboxRow>, StoreError> {
                let mut rows: Vec<UnpublishedRow> =
                    sqlx::query_as(OWN_UNPUBLISHED).bind(claimer).bind(i64::from(limit)).fetch_all(&self.pool).await?;
                let room = i64::from(limit) - rows.len() as i64;
                if orphans && room > 0 {
                    let orphaned: i64 = sqlx::query_scalar(any_orphaned!($dialect)).fetch_one(&self.pool).await?;
                    if orphaned > 0 {
                        let claimed: Vec<UnpublishedRow> = sqlx::query_as(claim_orphaned!($dialect, $skip_locked))
                            .bind(claimer)
                            .bind(room)
                            .fetch_all(&self.pool)
                            .await?;
                        rows.extend(claimed);
                    }
                }
                // RETURNING has no order, and a host whose own lease lapsed claims its own rows
                // again.
                rows.sort_unstable_by_key(|row| row.id);
                rows.dedup_by_key(|row| row.id);
                rows.into_iter().map(OutboxRow::try_from).collect()
            }

            async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
                self.write(&[Commit { published: ids.to_vec(), ..Commit::default() }], None).await.map(drop)
            }

            async fn outbox_backlog(&self) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(OUTBOX_BACKLOG).fetch_one(&self.pool).await?)
            }

            async fn events(&self, filter: &ListFilter) -> Result<Vec<EventRecord>, StoreError> {
                let filter = ListFilter { rule_ref: None, ..filter.clone() };
                let rows: Vec<EventRow> =
                    list::<$db>(select_events!(" WHERE 1 = 1"), &filter).build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(EventRecord::try_from).collect()
            }

            async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
                let row: Option<EventRow> =
                    sqlx::query_as(select_events!(" WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
                row.map(EventRecord::try_from).transpose()
            }

            async fn enforcements(&self, filter: &ListFilter) -> Result<Vec<EnforcementRecord>, StoreError> {
                let rows: Vec<EnforcementRow> =
                    list::<$db>(LIST_ENFORCEMENTS, filter).build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(EnforcementRecord::try_from).collect()
            }
        }
    };
}

impl_event_store!(SqliteStore, Sqlite, Sqlite, "");
impl_event_store!(PgStore, Postgres, Postgres, " FOR UPDATE SKIP LOCKED");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcement_status_reads_back_what_it_stores() {
        for status in [EnforcementStatus::Scheduled, EnforcementStatus::Failed] {
            assert_eq!(status.as_str().parse::<EnforcementStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).ok(), Some(Value::String(status.as_str().into())));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!(EnforcementStatus::Scheduled.as_str(), "scheduled");
        assert_eq!(EnforcementStatus::Failed.as_str(), "failed");
        let unknown = "Scheduled".parse::<EnforcementStatus>().err().map(|e| e.to_string());
        assert_eq!(
            unknown.as_deref(),
            Some("unknown enforcement status `Scheduled`: expected `scheduled` or `failed`")
        );
    }

    #[tokio::test]
    async fn an_unknown_stored_status_is_an_error_naming_it() -> Result<(), Box<dyn std::error::Error>> {
        use crate::store::Store;

        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("attune.db")).await?;
        store.migrate().await?;
        let event = EventRecord {
            id: "e1".into(),
            trigger_ref: "p.t".into(),
            rule_ref: None,
            source: "webhook".into(),
            payload: Value::Null,
            created_at: 1,
        };
        store.write(&[Commit { events: vec![event], ..Commit::default() }], None).await?;
        sqlx::query(
            "INSERT INTO enforcements (id, rule_ref, event_id, trigger_ref, action_ref, status, created_at) \
             VALUES ('f1', 'p.r', 'e1', 'p.t', 'core.echo', 'paused', 1)",
        )
        .execute(&store.pool)
        .await?;
        let read = store.enforcements(&ListFilter { limit: 10, ..ListFilter::default() }).await;
        assert_eq!(
            read.err().map(|e| e.to_string()).as_deref(),
            Some("stored enforcement: unknown enforcement status `paused`: expected `scheduled` or `failed`")
        );
        Ok(())
    }
}
