//! Batches of rows to one topic, each reported once every row of it is acknowledged or refused.
//!
//! * `send` hands a batch to librdkafka without copying the values (the batch is kept until it
//!   completes), one `rd_kafka_produce_batch` per partition; a full queue is waited on, never
//!   dropped. It returns the batch's id.
//! * `poll` serves the delivery reports and returns the batches that completed. Every report is
//!   counted here, in C, against its batch (no per-message Python), so a worker streams batch
//!   after batch with no pause for a flush: measured, the pause per chunk was a third of the
//!   wall time with one chunk in flight per worker.
//! * A failure retrying can cure is sent again (the same bytes, to the same partition) with
//!   exponential backoff and jitter, while the retry budget lasts. A failure of the record
//!   itself (too large, invalid, refused by policy) is that row's: the record is sent again
//!   alone first, through a second handle that puts one record per request, because the broker
//!   fails a whole request for one bad record (or marks the others `_INVALID_DIFFERENT_RECORD`,
//!   which are simply re-sent). If it still fails alone it is a refusal, returned with its
//!   batch, and the caller dead-letters the row. Anything else (authorization, a fatal producer
//!   error) ends the run.
//! * A batch's bad rows are produced with it, as dead letters (to the target `send` names),
//!   read from the batch like its rows: the batch completes when they are acknowledged too.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka_sys::bindings as rd;

use crate::client::{cstring, err_name, msg_err, Client, Failure, ERR_MSG_SIZE_TOO_LARGE, ERR_QUEUE_FULL};
use crate::deadletter::{letter, Target};
use crate::encode::{BatchData, Slot};
use crate::partition::Partitioner;

const PARTITION_UA: i32 = -1;
const COUNT_MAX_AGE: Duration = Duration::from_secs(30);
const COUNT_RETRY: Duration = Duration::from_secs(5);
/// Set in the opaque index of a dead letter: the rest is the row's index in the batch's bad rows.
const DEAD_BIT: usize = 1 << 31;
/// Opaque batch id of records no batch waits for (an exactly-once checkpoint record: the
/// transaction's commit is what confirms it).
const UNTRACKED: u32 = u32::MAX - 1;
const ERR_FENCED: i32 = -144; // _FENCED
const ERR_PRODUCER_FENCED: i32 = 90;

pub enum Stop {
    /// Kafka failed for the whole retry budget, or for good: the run fails.
    Unavailable(String),
    /// A stop was requested.
    Interrupted,
    Config(String),
    /// Exactly-once: the open transaction cannot commit (a delivery failed, a fatal producer
    /// error, a timed-out commit). The caller aborts it, makes a new producer and resumes from
    /// the last committed checkpoint.
    Transaction(String),
    /// Exactly-once: a producer with the same transactional id took over (another attempt
    /// owns the unit).
    Fenced(String),
}

/// A row Kafka refused on its own: dead-lettered by the caller.
pub struct Refusal {
    pub row: u64,
    pub line: u64,
    pub offset: u64,
    pub code: i32,
    pub reason: String,
}

/// Errors retrying cures: timeouts, transport, leadership changes, a topic not known yet, and
/// records failed only because another record of their request was bad.
fn retriable(err: i32) -> bool {
    matches!(
        err,
        -192 | -185 | -195 | -187 | -152 | -151 | -138 | -188 | -190 | -174 // _MSG_TIMED_OUT, _TIMED_OUT, _TRANSPORT, _ALL_BROKERS_DOWN, _PURGE_*, _INVALID_DIFFERENT_RECORD, _UNKNOWN_TOPIC, _UNKNOWN_PARTITION, _RETRY
            | 3 | 5 | 6 | 7 | 13 | 14 | 15 | 19 | 20 | 56 | 74 | 75 // UNKNOWN_TOPIC_OR_PART, LEADER_NOT_AVAILABLE, NOT_LEADER, REQUEST_TIMED_OUT, NETWORK_EXCEPTION, COORDINATOR_*, NOT_ENOUGH_REPLICAS*, KAFKA_STORAGE_ERROR, FENCED/UNKNOWN_LEADER_EPOCH
    )
}

/// Errors of one record: too large, corrupt or invalid (a keyless record to a compacted
/// topic), a bad timestamp, or refused by a broker-side policy.
const ERR_INVALID_DIFFERENT_RECORD: i32 = -138;

fn record_error(err: i32) -> bool {
    matches!(err, ERR_MSG_SIZE_TOO_LARGE | 2 | 18 | 32 | 44 | 87)
}

const ERR_TOPIC_AUTHORIZATION_FAILED: i32 = 29;

/// Why delivery to `topic` can never succeed, said so that a person knows what to change: a
/// permission is granted, not retried.
fn permanent(topic: &str, err: i32) -> String {
    if err == ERR_TOPIC_AUTHORIZATION_FAILED {
        return format!("not authorized to write to {topic} ({}): the principal needs Write on it", err_name(err));
    }
    format!("delivery to {topic} failed permanently: {}", err_name(err))
}

fn opaque(batch: u32, index: usize) -> usize {
    ((batch as usize) << 32) | index
}

fn unpack(op: usize) -> (u32, usize) {
    ((op >> 32) as u32, op & 0xffff_ffff)
}

fn is_dead(index: usize) -> bool {
    index & DEAD_BIT != 0
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Handle {
    Main,
    Isolated,
}

/// A batch between `send` and its completion.
struct Inflight {
    data: Arc<BatchData>,
    /// Where its bad rows go as dead letters (None: they are only counted).
    dead: Option<Arc<Target>>,
    /// Its records (rows and dead letters) not yet acknowledged or refused.
    outstanding: usize,
    refusals: Vec<Refusal>,
}

pub struct Producer {
    // Declared first: dropped (librdkafka destroyed) before the batches its messages point into.
    main: Client,
    isolated: Option<Client>,
    config: Vec<(String, String)>,
    topic: String,
    partitioner: Option<Partitioner>,
    count: Option<u32>,
    count_at: Option<Instant>,
    sticky: u32,
    budget: Duration,
    inflight: HashMap<u32, Inflight>,
    next_id: u32,
    /// Records sent alone through the isolated handle, not yet settled.
    alone: usize,
    last_progress: Instant,
    attempt: u32,
    /// The fault clock: from the first error Kafka reports while records wait to the next
    /// acknowledgement (retries, reconnections, leader elections), summed.
    fault_since: Option<Instant>,
    fault_total: Duration,
    errors_seen: u64,
    pub logs: Vec<(i32, String)>,
    stop: Arc<AtomicBool>,
    /// Exactly-once (a `transactional.id` is set): no record is re-sent by us, any delivery
    /// failure dooms the open transaction, and the rows the broker refused are kept for the
    /// caller, who withholds them when it sends the interval again.
    transactional: bool,
    txn_refusals: Vec<Refusal>,
}

type Result<T> = std::result::Result<T, Stop>;

/// A batch that completed: its id and the rows Kafka refused.
pub type Completed = (u32, Vec<Refusal>);

impl Producer {
    pub fn new(mut config: Vec<(String, String)>, topic: String, budget_s: f64, stop: Arc<AtomicBool>) -> Result<Producer> {
        let partitioner = config.iter().rev().find(|(k, _)| k == "partitioner").map_or(
            Partitioner::from_name("consistent_random"),
            |(_, v)| Partitioner::from_name(v),
        );
        // Every report is needed: successes are what completes a batch.
        config.push(("delivery.report.only.error".into(), "false".into()));
        let transactional = config.iter().any(|(k, v)| k == "transactional.id" && !v.is_empty());
        let main = Client::new(&config).map_err(Stop::Config)?;
        Ok(Producer {
            main,
            isolated: None,
            config,
            topic,
            partitioner,
            count: None,
            count_at: None,
            sticky: rand_u32(),
            budget: Duration::from_secs_f64(budget_s),
            inflight: HashMap::new(),
            next_id: 0,
            alone: 0,
            last_progress: Instant::now(),
            fault_since: None,
            fault_total: Duration::ZERO,
            errors_seen: 0,
            attempt: 0,
            logs: Vec::new(),
            stop,
            transactional,
            txn_refusals: Vec::new(),
        })
    }

    /// Registers the transactional id with its coordinator: fences every older producer of
    /// the same id and completes (aborts) its open transaction.
    pub fn init_transactions(&mut self, timeout_ms: i32) -> Result<()> {
        let e = unsafe { rd::rd_kafka_init_transactions(self.main.rk(), timeout_ms) };
        self.txn_result(e, "initialising transactions")
    }

    pub fn begin_transaction(&mut self) -> Result<()> {
        let e = unsafe { rd::rd_kafka_begin_transaction(self.main.rk()) };
        self.txn_result(e, "beginning a transaction")
    }

    /// Waits for every batch (as `flush`), then commits: returns the batches completed
    /// meanwhile. Any failure is `Transaction` (or `Fenced`): librdkafka lacks KIP-890, so even
    /// a commit that timed out is not retried; the caller makes a new producer.
    pub fn commit_transaction(&mut self, timeout_ms: i32) -> Result<Vec<Completed>> {
        let done = self.flush()?;
        if let Some(r) = self.txn_refusals.first() {
            return Err(Stop::Transaction(format!("Kafka refused a row (line {}): {}", r.line, r.reason)));
        }
        let e = unsafe { rd::rd_kafka_commit_transaction(self.main.rk(), timeout_ms) };
        self.txn_result(e, "committing the transaction")?;
        Ok(done)
    }

    /// Aborts the open transaction (librdkafka drops what is queued).
    pub fn abort_transaction(&mut self, timeout_ms: i32) -> Result<()> {
        let e = unsafe { rd::rd_kafka_abort_transaction(self.main.rk(), timeout_ms) };
        self.txn_result(e, "aborting the transaction")
    }

    /// The rows the broker refused in the transaction that failed (taken once).
    pub fn take_txn_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.txn_refusals)
    }

    fn txn_result(&mut self, e: *mut rd::rd_kafka_error_t, what: &str) -> Result<()> {
        if e.is_null() {
            return Ok(());
        }
        let (code, text) = unsafe {
            let code = rd::rd_kafka_error_code(e) as i32;
            let text = CStr::from_ptr(rd::rd_kafka_error_string(e)).to_string_lossy().into_owned();
            rd::rd_kafka_error_destroy(e);
            (code, text)
        };
        let msg = format!("{what}: {text}");
        Err(if code == ERR_FENCED || code == ERR_PRODUCER_FENCED { Stop::Fenced(msg) } else { Stop::Transaction(msg) })
    }

    /// A record no batch waits for, to `partition` of `topic` (copied): in a transaction, the
    /// commit confirms it.
    pub fn send_record(&mut self, topic: &str, partition: i32, key: &[u8], value: &[u8]) -> Result<()> {
        let t = cstring(topic).map_err(Stop::Config)?;
        loop {
            let err = unsafe {
                let vus = [
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC, rd::rd_kafka_vu_s__bindgen_ty_1 { cstr: t.as_ptr() }),
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION, rd::rd_kafka_vu_s__bindgen_ty_1 { i32_: partition }),
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, rd::rd_kafka_vu_s__bindgen_ty_1 {
                        mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: key.as_ptr() as *mut c_void, size: key.len() },
                    }),
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, rd::rd_kafka_vu_s__bindgen_ty_1 {
                        mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: value.as_ptr() as *mut c_void, size: value.len() },
                    }),
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS, rd::rd_kafka_vu_s__bindgen_ty_1 { i: rd::RD_KAFKA_MSG_F_COPY as i32 }),
                    vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE, rd::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque(UNTRACKED, 0) as *mut c_void }),
                ];
                let e = rd::rd_kafka_produceva(self.main.rk(), vus.as_ptr(), vus.len());
                if e.is_null() {
                    0
                } else {
                    let code = rd::rd_kafka_error_code(e) as i32;
                    rd::rd_kafka_error_destroy(e);
                    code
                }
            };
            match err {
                0 => return Ok(()),
                ERR_QUEUE_FULL => self.wait_for_room(Handle::Main)?,
                _ => return Err(self.failure(format!("cannot produce to {topic}: {}", err_name(err)))),
            }
        }
    }

    /// A failure of Kafka: the run's end, or in a transaction, the transaction's; or, when
    /// the producer was fenced (every produce call then fails with `_FATAL`), that.
    fn failure(&self, msg: String) -> Stop {
        if !self.transactional {
            return Stop::Unavailable(msg);
        }
        let mut buf = [0 as std::ffi::c_char; 512];
        let code = unsafe { rd::rd_kafka_fatal_error(self.main.rk(), buf.as_mut_ptr(), buf.len()) } as i32;
        if code == ERR_FENCED || code == ERR_PRODUCER_FENCED {
            let why = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
            return Stop::Fenced(format!("{msg}: {why}"));
        }
        Stop::Transaction(msg)
    }

    fn client(&mut self, h: Handle) -> &mut Client {
        match h {
            Handle::Main => &mut self.main,
            Handle::Isolated => self.isolated.as_mut().expect("isolated handle"),
        }
    }

    /// The topic's partition count (cached; None while unknown): also opens the connection.
    pub fn partition_count(&mut self) -> Option<u32> {
        let max_age = if self.count.is_some() { COUNT_MAX_AGE } else { COUNT_RETRY };
        if self.count_at.is_some_and(|t| t.elapsed() < max_age) {
            return self.count;
        }
        self.count_at = Some(Instant::now());
        let topic = self.topic.clone();
        if let Some(c) = self.main.partition_count(&topic, 2000) {
            self.count = Some(c);
        }
        self.count
    }

    /// Hands every ready row of `batch` to librdkafka, and its bad rows as dead letters to
    /// `dead` when given; returns the batch's id.
    pub fn send(&mut self, batch: BatchData, dead: Option<Arc<Target>>) -> Result<u32> {
        let id = self.next_id;
        self.next_id = if self.next_id + 1 >= UNTRACKED { 0 } else { self.next_id + 1 };
        let batch = Arc::new(batch);
        let ready: Vec<usize> = (0..batch.msgs.len()).filter(|&i| batch.msgs[i].state == Slot::Ready).collect();
        if self.inflight.is_empty() {
            self.last_progress = Instant::now(); // the stall clock runs only while waiting
        }
        let letters = if dead.is_some() { batch.bad.rows.len() } else { 0 };
        debug_assert!(batch.msgs.len() < DEAD_BIT && letters < DEAD_BIT, "indexes fit beside DEAD_BIT");
        self.inflight.insert(id, Inflight { data: Arc::clone(&batch), dead, outstanding: ready.len() + letters, refusals: Vec::new() });
        let targets = match (self.partitioner, self.partition_count()) {
            (Some(p), Some(count)) => {
                let sticky = self.sticky % count;
                self.sticky = self.sticky.wrapping_add(1);
                ready.iter().map(|&i| p.partition(batch.key(&batch.msgs[i]), count, sticky) as i32).collect()
            }
            _ => vec![PARTITION_UA; ready.len()],
        };
        let items: Vec<(i32, u32, usize)> = ready.iter().zip(targets).map(|(&i, p)| (p, id, i)).collect();
        self.produce(Handle::Main, items)?;
        if letters > 0 {
            self.produce_dead(id, 0..letters)?;
        }
        Ok(id)
    }

    /// Produces data rows, given as (partition, batch id, index), grouped by partition in order.
    fn produce(&mut self, h: Handle, mut items: Vec<(i32, u32, usize)>) -> Result<()> {
        items.sort_by_key(|&(p, _, _)| p); // stable: file order within a partition
        let mut start = 0;
        while start < items.len() {
            let p = items[start].0;
            let end = start + items[start..].iter().take_while(|x| x.0 == p).count();
            let mut msgs = Vec::with_capacity(end - start);
            // One lookup per run of the same batch, not per row (a send is one batch).
            let mut cur: Option<(u32, Arc<BatchData>)> = None;
            for &(_, b, i) in &items[start..end] {
                if cur.as_ref().map_or(true, |(id, _)| *id != b) {
                    cur = Some((b, Arc::clone(&self.inflight[&b].data)));
                }
                msgs.push(message(&cur.as_ref().expect("set above").1, b, i));
            }
            self.produce_run(h, p, &mut msgs)?;
            start = end;
        }
        Ok(())
    }

    /// One `rd_kafka_produce_batch` for one partition, waiting for room while the queue is full.
    fn produce_run(&mut self, h: Handle, partition: i32, msgs: &mut Vec<rd::rd_kafka_message_t>) -> Result<()> {
        let topic = self.topic.clone();
        let rkt = self.client(h).topic(&topic).map_err(Stop::Config)?;
        if h == Handle::Isolated {
            self.alone += msgs.len();
        }
        while !msgs.is_empty() {
            // Flags 0: neither F_COPY nor F_FREE; librdkafka reads the values from our batch.
            let done = unsafe { rd::rd_kafka_produce_batch(rkt, partition, 0, msgs.as_mut_ptr(), msgs.len() as i32) };
            if done as usize == msgs.len() {
                break;
            }
            let mut again = Vec::new();
            for m in msgs.iter() {
                let err = unsafe { msg_err(m) };
                match err {
                    0 => {}
                    ERR_QUEUE_FULL => {
                        let mut m = *m;
                        m.err = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
                        again.push(m);
                    }
                    ERR_MSG_SIZE_TOO_LARGE => {
                        // The client's own size check (message.max.bytes): this row alone.
                        if h == Handle::Isolated {
                            self.alone -= 1;
                        }
                        self.refuse(m._private as usize, err);
                    }
                    _ => return Err(self.failure(format!("cannot produce to {topic}: {}", err_name(err)))),
                }
            }
            *msgs = again;
            if msgs.is_empty() {
                break;
            }
            self.wait_for_room(h)?;
        }
        self.client(h).poll(0);
        Ok(())
    }

    /// The queue is full: serve reports (acknowledgements make room) for a moment.
    fn wait_for_room(&mut self, h: Handle) -> Result<()> {
        self.client(h).poll(50);
        self.process(h)?;
        self.check_stall(h)?;
        self.check_stop()
    }

    fn last_error(&mut self, h: Handle, default: &str) -> String {
        let e = self.client(h).callbacks().last_error.clone();
        if e.is_empty() { default.to_string() } else { e }
    }

    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) { Err(Stop::Interrupted) } else { Ok(()) }
    }

    /// Seconds spent in Kafka faults so far: from an error reported while records waited to
    /// the acknowledgement that ended it, the fault going on included.
    pub fn fault_seconds(&self) -> f64 {
        (self.fault_total + self.fault_since.map_or(Duration::ZERO, |s| s.elapsed())).as_secs_f64()
    }

    /// Fails once nothing was acknowledged for the whole retry budget while records wait.
    fn check_stall(&mut self, h: Handle) -> Result<()> {
        let stalled = self.last_progress.elapsed();
        if stalled > self.budget {
            let why = self.last_error(h, "no acknowledgements");
            return Err(Stop::Unavailable(format!("Kafka unavailable for {:.0}s: {why}", stalled.as_secs_f64())));
        }
        Ok(())
    }

    fn refuse(&mut self, op: usize, code: i32) {
        let (b, i) = unpack(op);
        let Some(f) = self.inflight.get_mut(&b) else { return };
        let m = &f.data.msgs[i];
        let refusal = Refusal { row: m.row, line: m.line, offset: m.offset, code, reason: err_name(code) };
        f.refusals.push(refusal);
        f.outstanding -= 1;
    }

    /// One record of batch `b` is done (acknowledged or refused).
    fn settle_one(&mut self, b: u32) {
        if let Some(f) = self.inflight.get_mut(&b) {
            f.outstanding -= 1;
        }
    }

    /// The dead letters of bad rows `rows` of batch `batch`: their values are read from the
    /// batch (kept until it completes), their headers are copied.
    fn produce_dead(&mut self, batch: u32, rows: impl IntoIterator<Item = usize>) -> Result<()> {
        let f = &self.inflight[&batch];
        let (data, to) = (Arc::clone(&f.data), Arc::clone(f.dead.as_ref().expect("a batch with dead letters has a target")));
        // The topic's handle, once (by name, librdkafka would look the topic up per record).
        let rkt = self.main.topic(&to.topic).map_err(Stop::Config)?;
        let bad = &data.bad;
        for j in rows {
            loop {
                let err = unsafe {
                    let hdrs = rd::rd_kafka_headers_new(8);
                    let value = letter(bad, &bad.rows[j], &to, |name, v| {
                        rd::rd_kafka_header_add(hdrs, name.as_ptr(), -1, v.as_ptr() as *const c_void, v.len() as isize);
                    });
                    let vus = [
                        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT, rd::rd_kafka_vu_s__bindgen_ty_1 { rkt }),
                        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, rd::rd_kafka_vu_s__bindgen_ty_1 {
                            mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: value.as_ptr() as *mut c_void, size: value.len() },
                        }),
                        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE, rd::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque(batch, DEAD_BIT | j) as *mut c_void }),
                        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS, rd::rd_kafka_vu_s__bindgen_ty_1 { headers: hdrs }),
                    ];
                    let e = rd::rd_kafka_produceva(self.main.rk(), vus.as_ptr(), vus.len());
                    if e.is_null() {
                        0
                    } else {
                        let code = rd::rd_kafka_error_code(e) as i32;
                        rd::rd_kafka_error_destroy(e);
                        rd::rd_kafka_headers_destroy(hdrs); // not taken over on failure
                        code
                    }
                };
                match err {
                    0 => break,
                    ERR_QUEUE_FULL => self.wait_for_room(Handle::Main)?,
                    _ => {
                        return Err(self.failure(format!("cannot produce to the dead-letter topic {}: {}", to.topic, err_name(err))));
                    }
                }
            }
        }
        Ok(())
    }

    fn dead_topic(&self, batch: u32) -> String {
        self.inflight.get(&batch).and_then(|f| f.dead.as_ref()).map_or_else(String::new, |t| t.topic.clone())
    }

    /// Serves delivery reports for up to `timeout_ms` and returns the batches that completed.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<Vec<Completed>> {
        self.main.poll(timeout_ms);
        self.process(Handle::Main)?;
        if self.inflight.values().any(|f| f.outstanding > 0) {
            self.check_stall(Handle::Main)?;
        }
        let done: Vec<u32> = self.inflight.iter().filter(|(_, f)| f.outstanding == 0).map(|(&id, _)| id).collect();
        let mut out = Vec::with_capacity(done.len());
        for id in done {
            let f = self.inflight.remove(&id).expect("in flight");
            out.push((id, f.refusals));
        }
        Ok(out)
    }

    /// Returns once every batch sent is complete, with those that completed meanwhile.
    pub fn flush(&mut self) -> Result<Vec<Completed>> {
        let mut out = self.poll(0)?;
        while !self.inflight.is_empty() {
            out.extend(self.poll(100)?);
            self.check_stop()?;
        }
        Ok(out)
    }

    /// Takes the reports `poll`/`flush` collected on handle `h` and acts on them.
    fn process(&mut self, h: Handle) -> Result<()> {
        let (acked, failed, fatal) = {
            let c = match h {
                Handle::Main => &self.main,
                Handle::Isolated => self.isolated.as_ref().expect("isolated handle"),
            };
            let mut cb = c.callbacks();
            self.logs.append(&mut cb.logs);
            if cb.errors != self.errors_seen && self.fault_since.is_none() && !self.inflight.is_empty() {
                self.fault_since = Some(Instant::now());
            }
            self.errors_seen = cb.errors;
            (std::mem::take(&mut cb.acked), std::mem::take(&mut cb.failures), cb.fatal.clone())
        };
        if let Some((code, f)) = fatal {
            let msg = format!("fatal producer error: {f}");
            return Err(if self.transactional && (code == ERR_FENCED || code == ERR_PRODUCER_FENCED) {
                Stop::Fenced(msg)
            } else {
                self.failure(msg)
            });
        }
        if !acked.is_empty() {
            self.last_progress = Instant::now();
            self.attempt = 0;
            if let Some(since) = self.fault_since.take() {
                self.fault_total += since.elapsed();
            }
        }
        for op in acked {
            let (b, _) = unpack(op);
            if h == Handle::Isolated {
                self.alone -= 1;
            }
            self.settle_one(b);
        }
        if failed.is_empty() {
            return Ok(());
        }
        if self.transactional {
            return self.fail_transaction(failed);
        }
        let mut resend = Vec::new();
        let mut alone = Vec::new();
        for f in failed {
            let (b, i) = unpack(f.opaque);
            if h == Handle::Isolated && !retriable(f.err) {
                self.alone -= 1;
            }
            if retriable(f.err) {
                resend.push(f);
            } else if record_error(f.err) && !is_dead(i) {
                if h == Handle::Main {
                    alone.push(f);
                } else {
                    self.refuse(f.opaque, f.err);
                }
            } else {
                let topic = if is_dead(i) {
                    format!("the dead-letter topic {}", self.dead_topic(b))
                } else {
                    format!("topic {}", self.topic)
                };
                return Err(Stop::Unavailable(permanent(&topic, f.err)));
            }
        }
        if !alone.is_empty() {
            self.send_alone(alone)?;
        }
        if !resend.is_empty() {
            self.attempt += 1;
            self.backoff(h)?;
            if h == Handle::Isolated {
                self.alone -= resend.len(); // counted again as they are produced
            }
            let (dead, data): (Vec<Failure>, Vec<Failure>) = resend.into_iter().partition(|f| is_dead(unpack(f.opaque).1));
            for f in dead {
                let (b, i) = unpack(f.opaque);
                self.produce_dead(b, [i & !DEAD_BIT])?;
            }
            let items = data.iter().map(|f| { let (b, i) = unpack(f.opaque); (f.partition, b, i) }).collect();
            self.produce(h, items)?;
        }
        Ok(())
    }

    /// Exactly-once: nothing is sent again inside a transaction that lost a record. The rows the
    /// broker refused on their own are kept (the caller withholds them next time) and their
    /// batches complete; any other failure ends the transaction now.
    fn fail_transaction(&mut self, failed: Vec<Failure>) -> Result<()> {
        let mut other = None;
        for f in failed {
            let (b, i) = unpack(f.opaque);
            if is_dead(i) || b == UNTRACKED {
                other.get_or_insert((f.err, if b == UNTRACKED { "the checkpoint record" } else { "a dead letter" }));
                continue;
            }
            if record_error(f.err) {
                self.refuse(f.opaque, f.err);
                let (b, i) = unpack(f.opaque);
                let m = &self.inflight[&b].data.msgs[i];
                self.txn_refusals.push(Refusal { row: m.row, line: m.line, offset: m.offset, code: f.err, reason: err_name(f.err) });
            } else {
                self.settle_one(b);
                if f.err != ERR_INVALID_DIFFERENT_RECORD {
                    other.get_or_insert((f.err, "a row"));
                }
            }
        }
        match other {
            Some((err, what)) => {
                Err(Stop::Transaction(format!("delivery of {what} failed: {}", err_name(err))))
            }
            None => Ok(()),
        }
    }

    /// Sends records again one per request, through the second handle, and waits for them.
    fn send_alone(&mut self, failed: Vec<Failure>) -> Result<()> {
        if self.isolated.is_none() {
            let mut conf = self.config.clone();
            conf.push(("batch.num.messages".into(), "1".into()));
            conf.push(("linger.ms".into(), "0".into()));
            self.isolated = Some(Client::new(&conf).map_err(Stop::Config)?);
        }
        let items = failed.iter().map(|f| { let (b, i) = unpack(f.opaque); (f.partition, b, i) }).collect();
        self.produce(Handle::Isolated, items)?;
        while self.alone > 0 {
            self.client(Handle::Isolated).poll(100);
            self.process(Handle::Isolated)?;
            self.check_stall(Handle::Isolated)?;
            self.check_stop()?;
        }
        Ok(())
    }

    /// Exponential backoff with full jitter (0..cap), serving reports meanwhile (an
    /// acknowledgement is progress); fails once the budget has passed without one.
    fn backoff(&mut self, h: Handle) -> Result<()> {
        self.check_stall(h)?;
        let left = self.budget.saturating_sub(self.last_progress.elapsed());
        let cap = (0.5 * 2f64.powi(self.attempt.min(16) as i32)).min(30.0).min(left.as_secs_f64());
        let deadline = Instant::now() + Duration::from_secs_f64(cap * f64::from(rand_u32()) / f64::from(u32::MAX));
        while Instant::now() < deadline {
            let wait = deadline - Instant::now();
            self.client(h).poll(wait.as_millis().min(200) as i32);
            self.check_stop()?;
        }
        Ok(())
    }

    /// Drops what is not acknowledged (a stop or a failure): nothing unacknowledged is worth
    /// waiting for, the checkpoint does not cover it.
    pub fn abort(&mut self) {
        self.main.purge();
        if let Some(c) = &self.isolated {
            c.purge();
        }
    }
}

fn message(data: &BatchData, batch: u32, index: usize) -> rd::rd_kafka_message_t {
    let m = &data.msgs[index];
    let value = data.value(m);
    let key = data.key(m);
    rd::rd_kafka_message_t {
        err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        rkt: std::ptr::null_mut(),
        partition: 0,
        payload: value.as_ptr() as *mut c_void,
        len: value.len(),
        key: key.map_or(std::ptr::null_mut(), |k| k.as_ptr() as *mut c_void),
        key_len: key.map_or(0, <[u8]>::len),
        offset: 0,
        _private: opaque(batch, index) as *mut c_void,
    }
}

fn vu(vtype: rd::rd_kafka_vtype_t, u: rd::rd_kafka_vu_s__bindgen_ty_1) -> rd::rd_kafka_vu_t {
    rd::rd_kafka_vu_t { vtype, u }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}
