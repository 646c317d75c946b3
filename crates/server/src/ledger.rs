//! The ledger: one SQLite row per generation request (`bantam serve --ledger FILE`), written
//! by one thread that owns the connection. WAL journaling with a commit per batch, so a
//! server killed at any moment leaves a readable file with every request that had ended.
//! Each key's spend for the current UTC day is also kept in memory, for budgets.

use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;

/// One request, as it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// Seconds since the Unix epoch, when the request arrived.
    pub at: f64,
    /// The API key's id (never the key), when keys are configured.
    pub key: Option<String>,
    /// The route named as the model, for routed requests.
    pub route: Option<String>,
    /// The model that answered (a local name, or the upstream's model).
    pub model: String,
    /// `local`, `upstream` or `fallback`.
    pub served: String,
    /// Why the request left the local model (escalation) or came back to it (fallback).
    pub reason: Option<String>,
    pub escalated: bool,
    pub stream: bool,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Milliseconds to the first token sent (none when nothing was sent).
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    /// Dollars: the local share of the machine plus the upstream's prices.
    pub cost: f64,
    /// Dollars the same tokens would have cost at the route's upstream prices.
    pub upstream_cost: Option<f64>,
    /// `ok`, `cancelled` (the client left) or `error`.
    pub status: String,
}

/// Why the ledger cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Sql { path: String, source: rusqlite::Error },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    day TEXT NOT NULL,
    key TEXT,
    route TEXT,
    model TEXT NOT NULL,
    served TEXT NOT NULL,
    escalated INTEGER NOT NULL,
    reason TEXT,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_ms REAL,
    latency_ms REAL NOT NULL,
    cost REAL NOT NULL,
    upstream_cost REAL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_day_key ON requests (day, key);
";

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn day_of(at: f64) -> String {
    crate::generation::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(at.max(0.0)))[..10].to_string()
}

/// Open (creating) a ledger file with its schema, in WAL mode.
pub fn open(path: &Path) -> Result<Connection, LedgerError> {
    let sql = |source| LedgerError::Sql { path: path.display().to_string(), source };
    let c = Connection::open(path).map_err(sql)?;
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    c.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
    c.execute_batch(SCHEMA).map_err(sql)?;
    Ok(c)
}

pub struct Ledger {
    tx: Mutex<Option<mpsc::Sender<Entry>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// (key, day) → dollars spent.
    spent: Mutex<HashMap<(String, String), f64>>,
}

impl Ledger {
    /// Open the file and start its writer; today's spend per key is read back.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let c = open(path)?;
        let today = day_of(now());
        let mut spent = HashMap::new();
        {
            let sql = |source| LedgerError::Sql { path: path.display().to_string(), source };
            let mut q = c.prepare("SELECT key, SUM(cost) FROM requests WHERE day = ?1 AND key IS NOT NULL GROUP BY key").map_err(sql)?;
            let rows = q.query_map([&today], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))).map_err(sql)?;
            for row in rows {
                let (k, v) = row.map_err(sql)?;
                spent.insert((k, today.clone()), v);
            }
        }
        let (tx, rx) = mpsc::channel::<Entry>();
        let writer = std::thread::Builder::new().name("ledger".into()).spawn(move || write_all(c, rx)).expect("spawning the ledger thread");
        Ok(Ledger { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), spent: Mutex::new(spent) })
    }

    pub fn record(&self, e: Entry) {
        if let Some(k) = &e.key {
            *self.spent.lock().unwrap_or_else(|p| p.into_inner()).entry((k.clone(), day_of(e.at))).or_default() += e.cost;
        }
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(e);
        }
    }

    /// Dollars `key` spent today (UTC).
    pub fn spent_today(&self, key: &str) -> f64 {
        self.spent.lock().unwrap_or_else(|p| p.into_inner()).get(&(key.to_string(), day_of(now()))).copied().unwrap_or(0.0)
    }

    /// Write what is queued and stop the writer (at shutdown).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The writer: a transaction per batch of whatever is queued.
fn write_all(mut c: Connection, rx: mpsc::Receiver<Entry>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        if let Err(e) = insert(&mut c, &batch) {
            eprintln!("ledger: {} rows not written: {e}", batch.len());
        }
    }
}

fn insert(c: &mut Connection, batch: &[Entry]) -> rusqlite::Result<()> {
    let t = c.transaction()?;
    {
        let mut q = t.prepare_cached(
            "INSERT INTO requests (at, day, key, route, model, served, escalated, reason, stream, prompt_tokens, completion_tokens, ttft_ms, latency_ms, cost, upstream_cost, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for e in batch {
            q.execute(params![
                e.at,
                day_of(e.at),
                e.key,
                e.route,
                e.model,
                e.served,
                e.escalated,
                e.reason,
                e.stream,
                e.prompt_tokens as i64,
                e.completion_tokens as i64,
                e.ttft_ms,
                e.latency_ms,
                e.cost,
                e.upstream_cost,
                e.status
            ])?;
        }
    }
    t.commit()
}

/// Totals of a group of requests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Totals {
    /// The group's value (a day, key, route, model or how it was served); "all" overall.
    pub group: String,
    pub requests: u64,
    pub ok: u64,
    pub cancelled: u64,
    pub errors: u64,
    pub escalated: u64,
    pub fallback: u64,
    /// Answered upstream (escalated or not).
    pub upstream: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Dollars spent.
    pub cost: f64,
    /// Dollars the same requests would have cost sent upstream (requests on routes with an
    /// upstream).
    pub upstream_cost: f64,
    /// `upstream_cost` less what those requests cost.
    pub saved: f64,
    /// Share of the requests answered upstream after a local try.
    pub escalation_rate: f64,
    pub mean_latency_ms: f64,
}

/// Columns a summary may group by.
pub const GROUPS: [&str; 6] = ["all", "day", "key", "route", "model", "served"];

/// Totals per group (`by` is one of [`GROUPS`]), from `since` (a `YYYY-MM-DD` day) on.
pub fn summary(path: &Path, by: &str, since: Option<&str>) -> Result<Vec<Totals>, LedgerError> {
    let sql = |source| LedgerError::Sql { path: path.display().to_string(), source };
    if !path.exists() {
        return Err(sql(rusqlite::Error::InvalidPath(path.to_path_buf())));
    }
    let c = open(path)?;
    let col = match by {
        "day" | "key" | "route" | "model" | "served" => format!("COALESCE({by}, '-')"),
        _ => "'all'".into(),
    };
    let q = format!(
        "SELECT {col} AS g, COUNT(*), SUM(status = 'ok'), SUM(status = 'cancelled'), SUM(status = 'error'), SUM(escalated), SUM(served = 'fallback'),
                SUM(served = 'upstream'), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost), SUM(COALESCE(upstream_cost, 0)),
                SUM(CASE WHEN upstream_cost IS NULL THEN 0 ELSE upstream_cost - cost END), AVG(latency_ms)
         FROM requests WHERE day >= ?1 GROUP BY g ORDER BY g"
    );
    let mut st = c.prepare(&q).map_err(sql)?;
    let rows = st
        .query_map([since.unwrap_or("")], |r| {
            let requests: i64 = r.get(1)?;
            let escalated: i64 = r.get(5)?;
            Ok(Totals {
                group: r.get(0)?,
                requests: requests as u64,
                ok: r.get::<_, i64>(2)? as u64,
                cancelled: r.get::<_, i64>(3)? as u64,
                errors: r.get::<_, i64>(4)? as u64,
                escalated: escalated as u64,
                fallback: r.get::<_, i64>(6)? as u64,
                upstream: r.get::<_, i64>(7)? as u64,
                prompt_tokens: r.get::<_, i64>(8)? as u64,
                completion_tokens: r.get::<_, i64>(9)? as u64,
                cost: r.get(10)?,
                upstream_cost: r.get(11)?,
                saved: r.get(12)?,
                escalation_rate: if requests > 0 { escalated as f64 / requests as f64 } else { 0.0 },
                mean_latency_ms: r.get::<_, Option<f64>>(13)?.unwrap_or(0.0),
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql)
}

/// Every row as CSV, with a header line.
pub fn export_csv(path: &Path, since: Option<&str>, out: &mut dyn std::io::Write) -> Result<u64, LedgerError> {
    let sql = |source| LedgerError::Sql { path: path.display().to_string(), source };
    let c = open(path)?;
    let cols =
        "id, at, day, key, route, model, served, escalated, reason, stream, prompt_tokens, completion_tokens, ttft_ms, latency_ms, cost, upstream_cost, status";
    let mut st = c.prepare(&format!("SELECT {cols} FROM requests WHERE day >= ?1 ORDER BY id")).map_err(sql)?;
    let io = |e: std::io::Error| sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
    writeln!(out, "{}", cols.replace(' ', "")).map_err(io)?;
    let mut rows = st.query([since.unwrap_or("")]).map_err(sql)?;
    let mut n = 0;
    while let Some(r) = rows.next().map_err(sql)? {
        let fields: Vec<String> = (0..17)
            .map(|i| match r.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => String::new(),
                Ok(rusqlite::types::ValueRef::Integer(v)) => v.to_string(),
                Ok(rusqlite::types::ValueRef::Real(v)) => v.to_string(),
                Ok(rusqlite::types::ValueRef::Text(t)) => csv_field(&String::from_utf8_lossy(t)),
                Ok(rusqlite::types::ValueRef::Blob(_)) => String::new(),
            })
            .collect();
        writeln!(out, "{}", fields.join(",")).map_err(io)?;
        n += 1;
    }
    Ok(n)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The books of one request while it runs: counts what the client was sent, and when the
/// run is dropped (finished, failed, or cancelled by the client) adds it to `/metrics` and
/// writes its row to the ledger, when there is one.
pub struct Books {
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    ledger: Option<std::sync::Arc<Ledger>>,
    entry: Entry,
    started: std::time::Instant,
    tag: Option<crate::route::Tag>,
    local_cost_per_hour: f64,
    /// Local compute of the answer sent.
    local_time: std::time::Duration,
    choices: usize,
    done: usize,
    failed: bool,
}

impl Books {
    pub fn new(
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        ledger: Option<std::sync::Arc<Ledger>>,
        job: &crate::generation::Job,
        local_cost_per_hour: f64,
    ) -> Books {
        let entry = Entry { at: now(), key: job.caller.clone(), model: job.model.clone(), stream: job.stream, served: "local".into(), ..Entry::default() };
        Books {
            metrics,
            ledger,
            entry,
            started: std::time::Instant::now(),
            tag: None,
            local_cost_per_hour,
            local_time: Default::default(),
            choices: 1,
            done: 0,
            failed: false,
        }
    }

    /// The run started: how it is served, and how many choices it has.
    pub fn started(&mut self, tag: &crate::route::Tag, choices: usize) {
        self.tag = Some(tag.clone());
        self.choices = choices.max(1);
    }

    pub fn observe(&mut self, p: &crate::generation::Piece) {
        use crate::generation::Piece;
        match p {
            Piece::Delta { content, thinking, .. } => {
                if self.entry.ttft_ms.is_none() && (!content.is_empty() || !thinking.is_empty()) {
                    self.entry.ttft_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
                }
            }
            Piece::Done { content, calls, usage, .. } => self.done(usage, !content.is_empty() || calls.is_some()),
            Piece::Error(_) => self.error(),
        }
    }

    pub fn done(&mut self, u: &engine::Usage, sent: bool) {
        if sent && self.entry.ttft_ms.is_none() {
            self.entry.ttft_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        }
        self.entry.prompt_tokens += u.prompt_tokens;
        self.entry.completion_tokens += u.eval_count;
        self.local_time += u.prompt_eval_duration + u.eval_duration;
        self.done += 1;
    }

    pub fn error(&mut self) {
        self.failed = true;
    }

    /// The request failed before it ran.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Books {
    fn drop(&mut self) {
        let mut e = std::mem::take(&mut self.entry);
        e.latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
        e.status = if self.failed {
            "error"
        } else if self.done >= self.choices {
            "ok"
        } else {
            "cancelled"
        }
        .into();
        let served = self.tag.as_ref().map(crate::route::Tag::get).unwrap_or_default();
        let mut local = self.local_time + served.local_spent;
        if let Some(r) = &served.routed {
            e.route = Some(r.route.clone());
            e.served = r.served.clone();
            e.escalated = r.escalated;
            e.reason = r.reason.clone();
        }
        if !served.model.is_empty() {
            e.model = served.model.clone();
        }
        let mut cost = 0.0;
        if let Some(u) = &served.upstream {
            cost += u.config.cost(e.prompt_tokens, e.completion_tokens);
        } else if local.is_zero() && self.done < self.choices && self.tag.is_some() {
            // A cancelled local answer has no engine figures: its wall time stands in.
            local = self.started.elapsed();
        }
        e.cost = cost + self.local_cost_per_hour * local.as_secs_f64() / 3600.0;
        e.upstream_cost = served.counterfactual.as_ref().map(|u| u.config.cost(e.prompt_tokens, e.completion_tokens));
        if self.tag.is_some() {
            self.metrics.account(&e);
        } else {
            // A request that never started (an unknown model, a bad option) is counted under
            // one label: the names clients send cannot grow the series.
            self.metrics.account(&Entry { model: "-".into(), ..e.clone() });
        }
        if let Some(l) = &self.ledger {
            l.record(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_persist_and_spend_is_read_back() {
        let dir = std::env::temp_dir().join(format!("bantam-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.db");
        let _ = std::fs::remove_file(&path);
        let e = |key: &str, cost: f64| Entry {
            at: now(),
            key: Some(key.into()),
            model: "m".into(),
            served: "local".into(),
            status: "ok".into(),
            cost,
            prompt_tokens: 3,
            completion_tokens: 4,
            ..Entry::default()
        };
        {
            let l = Ledger::open(&path).unwrap();
            l.record(e("a", 0.25));
            l.record(e("a", 0.5));
            l.record(e("b", 1.0));
            assert_eq!(l.spent_today("a"), 0.75);
            l.close();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!((l.spent_today("a"), l.spent_today("b"), l.spent_today("c")), (0.75, 1.0, 0.0));
        let c = open(&path).unwrap();
        let (n, tokens): (i64, i64) =
            c.query_row("SELECT COUNT(*), SUM(prompt_tokens + completion_tokens) FROM requests", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, tokens), (3, 21));
        let by_key = summary(&path, "key", None).unwrap();
        assert_eq!(by_key.iter().map(|t| (t.group.as_str(), t.requests, t.cost)).collect::<Vec<_>>(), vec![("a", 2, 0.75), ("b", 1, 1.0)]);
        let mut csv = Vec::new();
        assert_eq!(export_csv(&path, None, &mut csv).unwrap(), 3);
        assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0.0), "1970-01-01");
        assert_eq!(day_of(1_709_251_199.5), "2024-02-29");
    }
}
