//! The SQLite store: one writer thread, group commit, WAL.
//!
//! Every write is queued with a reply channel. The writer thread takes
//! everything waiting, commits it in one transaction with
//! `synchronous=FULL`, and only then replies: a success means the change is
//! on disk, and 64 concurrent registrations cost one fsync, not 64. When a
//! commit fails (disk full, I/O error, file removed) every write in it gets
//! the error and nothing of it is applied in memory.
//!
//! A file is checked before anything is written to it: it must be empty or
//! carry signpost's `application_id` and a schema version this build knows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::record::{StoreError, StoredInstance, Write, parse_registration, registration_json};
use crate::service::Health;

/// `PRAGMA application_id` of a signpost database ("SgnP").
const APPLICATION_ID: i64 = 0x5367_6E50;
/// `PRAGMA user_version`: bumped by every change of the schema. 2 added
/// `owner`; a version-1 file is migrated when opened ([`migrate`]).
pub(crate) const SCHEMA_VERSION: i64 = 2;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;

type Request = (Write, oneshot::Sender<Result<(), StoreError>>);

/// A handle on the writer thread.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    queue: Arc<Mutex<Option<mpsc::UnboundedSender<Request>>>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, checks it is ours,
    /// and hands `each` stored registration over, row by row.
    pub(crate) fn open(
        path: &Path,
        each: &mut dyn FnMut(StoredInstance),
    ) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let open_error = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(&e))?;
        }
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(&e))?;
        check_ownership(&connection, &shown)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| connection.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| connection.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|_| migrate(&connection))
            .and_then(|_| create_schema(&connection))
            .map_err(|e| open_error(&e))?;
        load(&connection, each).map_err(|e| open_error(&e))?;

        let (sender, receiver) = mpsc::unbounded_channel();
        let path_buf: PathBuf = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("signpost-store".into())
            .spawn(move || run_writer(connection, receiver, path_buf))
            .map_err(|e| open_error(&e))?;
        let store = SqliteStore {
            queue: Arc::new(Mutex::new(Some(sender))),
            writer: Arc::new(Mutex::new(Some(writer))),
        };
        Ok(store)
    }

    /// Queues `write` and waits for its commit.
    pub(crate) async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (reply, committed) = oneshot::channel();
        {
            let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let sender = queue.as_ref().ok_or(StoreError::Closed)?;
            sender
                .send((write, reply))
                .map_err(|_| StoreError::Closed)?;
        }
        committed.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Refuses new writes, lets the writer commit what is queued, and waits
    /// for it to finish.
    pub(crate) async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// Refuses a file that holds anything but a signpost database of a schema
/// version this build understands. Reads only.
fn check_ownership(connection: &Connection, path: &str) -> Result<(), StoreError> {
    let foreign = |detail: String| StoreError::Foreign {
        path: path.to_string(),
        detail,
    };
    let read = |pragma: &str| -> Result<i64, StoreError> {
        connection
            .pragma_query_value(None, pragma, |row| row.get(0))
            .map_err(|e| foreign(e.to_string()))
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    let objects: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(|e| foreign(e.to_string()))?;
    if application_id == 0 && version == 0 && objects == 0 {
        return Ok(()); // new, empty file
    }
    if application_id != APPLICATION_ID {
        return Err(foreign(format!(
            "application_id {application_id:#x}, {objects} schema objects"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Brings a file of an older schema to [`SCHEMA_VERSION`], in one
/// transaction: version 1 gains the `owner` column (NULL: registered
/// without a token, which only an admin token may then change).
fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version == 1 {
        connection.execute_batch(
            "BEGIN;
             ALTER TABLE instances ADD COLUMN owner TEXT;
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
        tracing::info!("store migrated from schema 1 to 2: instances have an owner");
    }
    Ok(())
}

fn create_schema(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS instances (
             id TEXT PRIMARY KEY,
             type TEXT NOT NULL,
             name TEXT NOT NULL,
             registration TEXT NOT NULL,
             health TEXT NOT NULL,
             registered_at_ms INTEGER NOT NULL,
             owner TEXT,
             UNIQUE (type, name)
         );
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
}

fn parse_health(text: &str) -> Health {
    match text {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        _ => Health::Critical,
    }
}

/// Every stored registration. A row that no longer validates is logged and
/// skipped rather than served.
fn load(connection: &Connection, each: &mut dyn FnMut(StoredInstance)) -> rusqlite::Result<()> {
    let mut statement = connection
        .prepare("SELECT id, registration, health, registered_at_ms, owner FROM instances")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (id, registration, health, registered_at_ms, owner) = row?;
        let parsed = Uuid::parse_str(&id)
            .map_err(|e| e.to_string())
            .and_then(|id| parse_registration(&registration).map(|spec| (id, spec)));
        match parsed {
            Ok((id, spec)) => each(StoredInstance {
                id,
                spec,
                health: parse_health(&health),
                registered_at_ms: u64::try_from(registered_at_ms).unwrap_or(0),
                check: None,
                owner: owner.map(Into::into),
            }),
            Err(error) => {
                tracing::warn!(%id, %error, "skipping a stored registration that does not validate")
            }
        }
    }
    Ok(())
}

/// The writer thread: commit whatever is queued as one transaction, reply to
/// each, repeat until every handle is gone.
///
/// A failed commit may still have reached the file: when its fsync fails
/// after the WAL frames were written, SQLite treats the transaction as not
/// committed, but a restart's recovery finds the frames and replays them.
/// So after a failed commit the connection is closed and the database
/// opened again, which recovers exactly as a restart would, and each write
/// is told what that recovery kept: [`StoreError::Write`] when nothing of it
/// is in the file (the client is told nothing changed, and nothing does),
/// [`StoreError::Kept`] when it is (the registrar applies it, so memory,
/// the file and the client agree).
fn run_writer(connection: Connection, mut queue: mpsc::UnboundedReceiver<Request>, path: PathBuf) {
    let mut connection = Some(connection);
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let Some(open) = connection.as_mut() else {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::Write(
                    "the database could not be reopened".into(),
                )));
            }
            continue;
        };
        match commit(open, &batch, &path) {
            Ok(()) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(Failure::Before(error)) => {
                tracing::error!(%error, writes = batch.len(), "store commit refused; nothing in it was acknowledged");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Write(error.clone())));
                }
            }
            Err(Failure::Commit(error)) => {
                drop(connection.take());
                connection = reopen(&path)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot reopen the database after a failed commit"))
                    .ok();
                let kept = batch
                    .iter()
                    .filter(|(write, _)| connection.as_ref().is_some_and(|c| is_kept(c, write)));
                tracing::error!(
                    %error,
                    writes = batch.len(),
                    kept = kept.count(),
                    "store commit failed; what a restart would restore is applied, the rest refused"
                );
                for (write, reply) in batch.drain(..) {
                    let kept = connection.as_ref().is_some_and(|c| is_kept(c, &write));
                    let answer = if kept {
                        StoreError::Kept(error.clone())
                    } else {
                        StoreError::Write(error.clone())
                    };
                    let _ = reply.send(Err(answer));
                }
            }
        }
    }
}

/// Why a commit failed: before anything was written (a file removed), or
/// in SQLite, possibly after its frames reached the WAL.
enum Failure {
    Before(String),
    Commit(String),
}

/// Opens the database again, as a restart would (recovering the WAL).
fn reopen(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(connection)
}

/// Whether the file holds `write`'s effect.
fn is_kept(connection: &Connection, write: &Write) -> bool {
    let row = |id: &Uuid| -> Option<(String, String, Option<String>)> {
        connection
            .query_row(
                "SELECT registration, health, owner FROM instances WHERE id = ?1",
                params![id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .ok()
    };
    match write {
        Write::Put(instance) => row(&instance.id).is_some_and(|(registration, health, owner)| {
            registration == registration_json(&instance.spec)
                && health == instance.health.as_str()
                && owner.as_deref() == instance.owner.as_deref()
        }),
        Write::Health { id, health } => row(id).is_some_and(|(_, kept, _)| kept == health.as_str()),
        Write::Delete(id) => row(id).is_none(),
        Write::DeleteMany(ids) => ids.iter().all(|id| row(id).is_none()),
    }
}

/// Applies `batch` in one transaction. A file that vanished from under us is
/// a failure too: committing to an unlinked inode would acknowledge writes
/// that no restart can ever read back. That holds for the `-wal` file as
/// well: a commit lands there first, and with it removed SQLite carries on
/// appending to the unlinked inode, so a crash loses every write acknowledged
/// since (found by tests/it/store.rs; the WAL exists from `open` on, since
/// `create_schema` writes).
fn commit(connection: &mut Connection, batch: &[Request], path: &Path) -> Result<(), Failure> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for file in [path, Path::new(&wal)] {
        if !file.exists() {
            return Err(Failure::Before(format!("{} was removed", file.display())));
        }
    }
    apply(connection, batch).map_err(|e| Failure::Commit(e.to_string()))
}

/// The batch's statements in one transaction, committed.
fn apply(connection: &mut Connection, batch: &[Request]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut put = transaction.prepare_cached(
            "INSERT OR REPLACE INTO instances
                 (id, type, name, registration, health, registered_at_ms, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut health =
            transaction.prepare_cached("UPDATE instances SET health = ?2 WHERE id = ?1")?;
        let mut delete = transaction.prepare_cached("DELETE FROM instances WHERE id = ?1")?;
        for (write, _) in batch {
            match write {
                Write::Put(instance) => {
                    put.execute(params![
                        instance.id.to_string(),
                        instance.spec.service_type,
                        instance.spec.name,
                        registration_json(&instance.spec),
                        instance.health.as_str(),
                        i64::try_from(instance.registered_at_ms).unwrap_or(i64::MAX),
                        instance.owner.as_deref(),
                    ])?;
                }
                Write::Health { id, health: value } => {
                    health.execute(params![id.to_string(), value.as_str()])?;
                }
                Write::Delete(id) => {
                    delete.execute(params![id.to_string()])?;
                }
                Write::DeleteMany(ids) => {
                    for id in ids {
                        delete.execute(params![id.to_string()])?;
                    }
                }
            }
        }
    }
    transaction.commit()
}
