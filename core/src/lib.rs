//! `csvkafka_core`: the data plane's row loop in native code.
//!
//! Python keeps the decisions (the run, checkpoints, the exact path for doubtful records); this
//! module does the per-row work with the GIL released: cutting the stream on record boundaries,
//! encoding rows as JSON or Avro, setting aside plainly bad rows (worded, counted by kind, and
//! kept in their batch: Python sees a count, and rows only as many as it asks for),
//! partitioning and producing rows and dead letters through librdkafka's C API, and waiting
//! for their acknowledgements. See `ingest_worker/kafka/` and
//! `ingest_worker/csv/` for the Python side.

mod avro;
mod badrows;
mod client;
mod deadletter;
mod encode;
mod json;
mod partition;
mod producer;
mod records;
mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyInterruptedError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use encode::{BatchData, Exact, Format, Layout, Msg, Slot};
use types::{ColType, Column, TimeFormat};
use records::Dialect;

create_exception!(csvkafka_core, KafkaUnavailable, PyException, "Kafka failed for the whole retry budget, or for good.");
create_exception!(csvkafka_core, TransactionFailed, KafkaUnavailable, "The open transaction cannot commit: abort it, make a new producer, resume from the last commit.");
create_exception!(csvkafka_core, ProducerFenced, TransactionFailed, "A producer with the same transactional id took over.");

fn to_py(stop: producer::Stop) -> PyErr {
    match stop {
        producer::Stop::Unavailable(m) => KafkaUnavailable::new_err(m),
        producer::Stop::Interrupted => PyInterruptedError::new_err("stopping"),
        producer::Stop::Config(m) => PyValueError::new_err(m),
        producer::Stop::Transaction(m) => TransactionFailed::new_err(m),
        producer::Stop::Fenced(m) => ProducerFenced::new_err(m),
    }
}

/// Cuts `buf` (starting on a record boundary) into chunks: a list of (end, rows, newlines).
#[pyfunction]
#[pyo3(signature = (buf, delimiter, quote, eof, max_rows, max_bytes))]
fn cut(py: Python<'_>, buf: &[u8], delimiter: u8, quote: Option<u8>, eof: bool, max_rows: u64, max_bytes: usize) -> Vec<(usize, u64, u64)> {
    let d = Dialect { delimiter, quote };
    py.allow_threads(|| records::cut(buf, d, eof, max_rows.max(1), max_bytes.max(1)))
        .into_iter()
        .map(|c| (c.end, c.rows, c.newlines))
        .collect()
}

/// Kafka's murmur2 of a key (the Java client's), for tests and tools.
#[pyfunction]
fn murmur2(key: &[u8]) -> u32 {
    partition::murmur2(key)
}

/// The partition librdkafka's partitioner `name` gives `key` among `count` (keyless: `sticky`).
#[pyfunction]
#[pyo3(signature = (name, key, count, sticky=0))]
fn partition_of(name: &str, key: Option<&[u8]>, count: u32, sticky: u32) -> PyResult<u32> {
    let p = partition::Partitioner::from_name(name).ok_or_else(|| PyValueError::new_err(format!("not a key partitioner: {name}")))?;
    Ok(p.partition(key, count, sticky))
}

/// How records become messages: built once per run from the layout.
#[pyclass(frozen, module = "csvkafka_core")]
struct Encoder {
    layout: Layout,
}

/// A column as Python describes it: (type, nullable, precision, scale, format, zone offset in
/// seconds).
type ColumnTuple = (String, bool, u32, u32, Option<String>, i32);

fn json_string(s: &str) -> Vec<u8> {
    let mut out = vec![b'"'];
    json::escape_into(&mut out, s.as_bytes());
    out.push(b'"');
    out
}

#[pymethods]
impl Encoder {
    /// `names` are the column names, `columns` how each converts; `source` the file's URL when
    /// metadata is on, `id_prefix` the per-file half of event ids when they are on. `avro`
    /// writes Avro's binary encoding instead of JSON, and `frame` goes before every value
    /// (Confluent's magic byte and schema id).
    #[new]
    ///
    /// `order` lists the columns in the order the value writes them (default: the file's), and
    /// `key_frame` makes keys Avro records of the key columns under that framing.
    #[pyo3(signature = (names, columns, key_columns, delimiter, quote, source=None, id_prefix=None, avro=false, frame=Vec::new(), order=None, key_frame=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>, names: Vec<String>, columns: Vec<ColumnTuple>, key_columns: Vec<usize>, delimiter: u8, quote: Option<u8>,
        source: Option<String>, id_prefix: Option<String>, avro: bool, frame: Vec<u8>, order: Option<Vec<usize>>,
        key_frame: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        if names.len() != columns.len() || names.is_empty() {
            return Err(PyValueError::new_err("one type per column, and at least one column"));
        }
        let columns = columns.into_iter().map(column_of).collect::<PyResult<Vec<_>>>()?;
        if key_columns.iter().any(|&k| k >= names.len()) {
            return Err(PyValueError::new_err("key column out of range"));
        }
        let order = order.unwrap_or_else(|| (0..names.len()).collect());
        let mut seen = order.clone();
        seen.sort_unstable();
        if seen != (0..names.len()).collect::<Vec<_>>() {
            return Err(PyValueError::new_err("order must list every column once"));
        }
        let prefixes = order
            .iter()
            .enumerate()
            .map(|(pos, &i)| [if pos == 0 { &b"{"[..] } else { &b","[..] }, &json_string(&names[i]), b":"].concat())
            .collect();
        let (source, id_prefix) = if avro {
            (source.map(String::into_bytes), id_prefix.map(|p| format!("{p}-").into_bytes()))
        } else {
            (
                source.map(|s| [&b",\"_source\":"[..], &json_string(&s), b",\"_line\":"].concat()),
                id_prefix.map(|p| format!(",\"_id\":\"{p}-").into_bytes()),
            )
        };
        Ok(Encoder {
            layout: Layout {
                dialect: Dialect { delimiter, quote },
                format: if avro { Format::Avro } else { Format::Json },
                frame,
                prefixes,
                columns,
                order,
                key_columns,
                key_frame,
                source,
                id_prefix,
                names: names.iter().map(|n| Ok(PyString::new(py, n).repr()?.to_str()?.to_owned())).collect::<PyResult<_>>()?,
            },
        })
    }

    /// The messages of one chunk of whole records; `offset`, `line` and `row` (the data rows
    /// before it) are where it starts.
    fn encode(&self, py: Python<'_>, chunk: &[u8], offset: u64, line: u64, row: u64) -> Batch {
        let e = py.allow_threads(|| self.layout.encode(chunk, offset, line, row));
        Batch { data: Some(e.data), exact: e.exact, rows_read: e.rows_read }
    }

    /// One record's fields as Python's csv split them: (value, key, None), or (None, None,
    /// (column index, reason)) when a field does not convert.
    #[allow(clippy::type_complexity)]
    fn encode_fields<'py>(
        &self, py: Python<'py>, fields: Vec<String>, line: u64, offset: u64,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, Option<Bound<'py, PyBytes>>, Option<(usize, String)>)> {
        if fields.len() != self.layout.columns.len() {
            return Err(PyValueError::new_err("one field per column"));
        }
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        Ok(match self.layout.encode_fields(&refs, line, offset) {
            Ok((value, key)) => {
                let key = (!self.layout.key_columns.is_empty()).then(|| PyBytes::new(py, &key));
                (Some(PyBytes::new(py, &value)), key, None)
            }
            Err(refused) => (None, None, Some(refused)),
        })
    }
}

fn column_of((t, nullable, precision, scale, format, offset_s): ColumnTuple) -> PyResult<Column> {
    let ty = ColType::parse(&t).ok_or_else(|| PyValueError::new_err(format!("unknown column type {t}")))?;
    let format = TimeFormat::parse(format.as_deref()).map_err(PyValueError::new_err)?;
    if precision > 38 || scale > precision {
        return Err(PyValueError::new_err(format!("decimal({precision}, {scale}) out of range")));
    }
    Ok(Column { ty, nullable, precision, scale, format, offset_s })
}

/// Why `text` does not convert to the column's type, or None when it does (type inference asks
/// the encoder's own rules).
#[pyfunction]
fn check(column: ColumnTuple, text: &str, avro: bool) -> PyResult<Option<String>> {
    let col = column_of(column)?;
    if col.ty == ColType::Str {
        return Ok(None);
    }
    Ok(types::convert(text.as_bytes(), &col, avro).err())
}

/// The messages of one chunk, in file order, and its bad rows. Slots the exact path must decide
/// are filled (or rejected, the row set aside) before the batch is sent; once sent, the
/// producer owns it.
#[pyclass(module = "csvkafka_core")]
struct Batch {
    data: Option<BatchData>,
    exact: Vec<Exact>,
    #[pyo3(get)]
    rows_read: u64,
}

/// A bad row as Python reads it: (line, row, offset, reason, raw, kafka_error, kind).
type BadRowTuple<'py> = (u64, u64, u64, Bound<'py, PyString>, Bound<'py, PyBytes>, Option<i64>, Bound<'py, PyString>);

impl Batch {
    fn data(&self) -> PyResult<&BatchData> {
        self.data.as_ref().ok_or_else(|| PyValueError::new_err("batch already sent"))
    }
    fn data_mut(&mut self) -> PyResult<&mut BatchData> {
        self.data.as_mut().ok_or_else(|| PyValueError::new_err("batch already sent"))
    }
    fn pending(&mut self, slot: usize) -> PyResult<&mut Msg> {
        let msg = self.data_mut()?.msgs.get_mut(slot).ok_or_else(|| PyValueError::new_err("no such slot"))?;
        if msg.state != Slot::Pending {
            return Err(PyValueError::new_err("slot already decided"));
        }
        Ok(msg)
    }
}

#[pymethods]
impl Batch {
    /// A batch of messages made by the exact path (dialects the encoder does not take).
    #[staticmethod]
    #[pyo3(signature = (values, keys, rows, lines, offsets, rows_read))]
    fn from_messages(
        values: Vec<Vec<u8>>, keys: Option<Vec<Vec<u8>>>, rows: Vec<u64>, lines: Vec<u64>, offsets: Vec<u64>, rows_read: u64,
    ) -> PyResult<Batch> {
        let n = values.len();
        if rows.len() != n || lines.len() != n || offsets.len() != n || keys.as_ref().is_some_and(|k| k.len() != n) {
            return Err(PyValueError::new_err("values, keys, rows, lines and offsets differ in length"));
        }
        let mut data = BatchData::default();
        for (i, v) in values.iter().enumerate() {
            let (v0, k0) = (data.values.len(), data.keys.len());
            data.values.extend_from_slice(v);
            if let Some(keys) = &keys {
                data.keys.extend_from_slice(&keys[i]);
            }
            data.msgs.push(Msg {
                value: (v0, v.len()),
                key: (k0, data.keys.len() - k0),
                line: lines[i],
                row: rows[i],
                offset: offsets[i],
                state: Slot::Ready,
            });
        }
        Ok(Batch { data: Some(data), exact: Vec::new(), rows_read })
    }

    /// Records for the exact path: (slot, start, end, line, row) with start/end in the chunk
    /// and row counted from 1 at the chunk's first row.
    fn exact(&self) -> Vec<(usize, usize, usize, u64, u64)> {
        self.exact.iter().map(|x| (x.slot, x.start, x.end, x.line, x.row)).collect()
    }

    /// Sets a row aside whose reason is worded by the caller (the exact path's, or Kafka's
    /// refusal): it joins the batch's bad rows, in file order by `offset`. `kind`, when given,
    /// is the reason's start that rows failing the same way share (else read from its shape).
    #[pyo3(signature = (line, row, offset, reason, raw, kafka_error=None, kind=None))]
    #[allow(clippy::too_many_arguments)]
    fn set_aside(&mut self, line: u64, row: u64, offset: u64, reason: &str, raw: &[u8], kafka_error: Option<i64>, kind: Option<&str>) -> PyResult<()> {
        self.data_mut()?.bad.push(line, row, offset, raw, reason, kafka_error, kind);
        Ok(())
    }

    /// The bad rows: (count, line of the last, {kind: count}).
    fn bad_summary<'py>(&mut self, py: Python<'py>) -> PyResult<(usize, u64, Bound<'py, PyDict>)> {
        let bad = &mut self.data_mut()?.bad;
        let counts = py.allow_threads(|| {
            bad.sort();
            let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            for r in &bad.rows {
                *counts.entry(bad.kind(r)).or_default() += 1;
            }
            counts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect::<Vec<_>>()
        });
        let kinds = PyDict::new(py);
        for (k, n) in counts {
            kinds.set_item(k, n)?;
        }
        Ok((bad.rows.len(), bad.rows.last().map_or(0, |r| r.line), kinds))
    }

    /// The first `limit` bad rows in file order (all of them: None), as
    /// (line, row, offset, reason, raw, kafka_error, kind).
    #[pyo3(signature = (limit=None))]
    fn bad_rows<'py>(&mut self, py: Python<'py>, limit: Option<usize>) -> PyResult<Vec<BadRowTuple<'py>>> {
        let bad = &mut self.data_mut()?.bad;
        bad.sort();
        let bad = &*bad;
        let n = limit.map_or(bad.rows.len(), |l| l.min(bad.rows.len()));
        Ok(bad.rows[..n].iter().map(|r| (
            r.line, r.row, r.offset, PyString::new(py, bad.reason(r)), PyBytes::new(py, bad.raw(r)), r.kafka_error,
            PyString::new(py, bad.kind(r)),
        )).collect())
    }

    #[pyo3(signature = (slot, value, key=None))]
    fn fill(&mut self, slot: usize, value: &[u8], key: Option<&[u8]>) -> PyResult<()> {
        self.pending(slot)?;
        let data = self.data_mut()?;
        let (v0, k0) = (data.values.len(), data.keys.len());
        data.values.extend_from_slice(value);
        data.keys.extend_from_slice(key.unwrap_or(b""));
        let (vlen, klen) = (data.values.len() - v0, data.keys.len() - k0);
        let msg = &mut data.msgs[slot];
        msg.value = (v0, vlen);
        msg.key = (k0, klen);
        msg.state = Slot::Ready;
        Ok(())
    }

    fn reject(&mut self, slot: usize) -> PyResult<()> {
        self.pending(slot)?.state = Slot::Rejected;
        Ok(())
    }

    /// The messages to publish (rows minus bad rows).
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.data()?.msgs.iter().filter(|m| m.state == Slot::Ready).count())
    }

    fn message_values<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let d = self.data()?;
        Ok(d.msgs.iter().filter(|m| m.state == Slot::Ready).map(|m| PyBytes::new(py, d.value(m))).collect())
    }

    fn message_keys<'py>(&self, py: Python<'py>) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let d = self.data()?;
        Ok(d.msgs.iter().filter(|m| m.state == Slot::Ready).map(|m| d.key(m).map(|k| PyBytes::new(py, k))).collect())
    }

    /// Takes the ready rows at these byte offsets out of the batch (rows Kafka refused in an
    /// earlier, aborted transaction): their (row within the chunk, line, offset).
    fn withhold(&mut self, offsets: std::collections::HashSet<u64>) -> PyResult<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        for m in self.data_mut()?.msgs.iter_mut() {
            if m.state == Slot::Ready && offsets.contains(&m.offset) {
                m.state = Slot::Rejected;
                out.push((m.row, m.line, m.offset));
            }
        }
        Ok(out)
    }

    /// Takes the ready rows without a key out of the batch (a compacted topic refuses them):
    /// their (row within the chunk, line, offset).
    fn withhold_keyless(&mut self) -> PyResult<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        for m in self.data_mut()?.msgs.iter_mut() {
            if m.state == Slot::Ready && m.key.1 == 0 {
                m.state = Slot::Rejected;
                out.push((m.row, m.line, m.offset));
            }
        }
        Ok(out)
    }

    fn message_lines(&self) -> PyResult<Vec<u64>> {
        let d = self.data()?;
        Ok(d.msgs.iter().filter(|m| m.state == Slot::Ready).map(|m| m.line).collect())
    }
}

/// One topic's producer (one librdkafka handle, plus a second one made only to re-send a
/// refused record alone). Used by one thread at a time; `request_stop` from any thread.
#[pyclass(frozen, module = "csvkafka_core")]
struct Producer {
    core: Mutex<Option<producer::Producer>>,
    stop: Arc<AtomicBool>,
}

type RefusalTuple = (u64, u64, u64, i32, String);
/// A completed batch: its id, and the rows Kafka refused as (row within the batch's chunk,
/// line, offset, error code, reason).
type CompletedTuple = (u32, Vec<RefusalTuple>);

fn completed(done: Vec<producer::Completed>) -> Vec<CompletedTuple> {
    done.into_iter()
        .map(|(id, refusals)| (id, refusals.into_iter().map(|r| (r.row, r.line, r.offset, r.code, r.reason)).collect()))
        .collect()
}

impl Producer {
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut producer::Producer) -> Result<T, producer::Stop> + Send) -> PyResult<T> {
        py.allow_threads(|| {
            let mut guard = self.core.lock().unwrap();
            let p = guard.as_mut().ok_or_else(|| producer::Stop::Config("producer closed".into()))?;
            f(p)
        })
        .map_err(to_py)
    }
}

#[pymethods]
impl Producer {
    #[new]
    fn new(config: Vec<(String, String)>, topic: String, retry_budget_s: f64) -> PyResult<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let p = producer::Producer::new(config, topic, retry_budget_s, Arc::clone(&stop)).map_err(to_py)?;
        Ok(Producer { core: Mutex::new(Some(p)), stop })
    }

    /// Connects and looks the topic's partitions up now, rather than at the first `send`
    /// (the broker's first answer takes tens of milliseconds): the topic's partition count.
    fn warm_up(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        self.with(py, |p| Ok(p.partition_count()))
    }

    /// Hands the batch's ready messages to librdkafka (waiting while its queue is full), and
    /// its bad rows as dead letters to `dead_letter_topic` when given (`source` the file's URL,
    /// each row's bytes cut to `room`); returns the batch's id, by which `poll` reports it
    /// complete once all of them are acknowledged.
    #[pyo3(signature = (batch, dead_letter_topic=None, source=b"".as_slice(), room=0))]
    fn send(&self, py: Python<'_>, batch: &Bound<'_, Batch>, dead_letter_topic: Option<&str>, source: &[u8], room: usize) -> PyResult<u32> {
        let dead = dead_letter_topic.map(|t| Arc::new(deadletter::Target { topic: t.to_owned(), source: source.to_vec(), room }));
        let mut b = batch.borrow_mut();
        if b.data.as_ref().is_some_and(|d| d.msgs.iter().any(|m| m.state == Slot::Pending)) {
            return Err(PyValueError::new_err("batch has undecided slots"));
        }
        let data = b.data.take().ok_or_else(|| PyValueError::new_err("batch already sent"))?;
        drop(b);
        self.with(py, move |p| p.send(data, dead))
    }

    /// Serves delivery reports for up to `timeout_ms`; returns the batches that completed.
    fn poll(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<Vec<CompletedTuple>> {
        self.with(py, move |p| p.poll(timeout_ms)).map(completed)
    }

    /// Waits until every batch sent is complete; returns those that completed meanwhile.
    fn flush(&self, py: Python<'_>) -> PyResult<Vec<CompletedTuple>> {
        self.with(py, |p| p.flush()).map(completed)
    }

    /// Exactly-once: fences older producers of the transactional id, completing their open
    /// transaction (ProducerFenced if a newer one exists, TransactionFailed otherwise).
    fn init_transactions(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<()> {
        self.with(py, move |p| p.init_transactions(timeout_ms))
    }

    fn begin_transaction(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |p| p.begin_transaction())
    }

    /// Waits for every batch sent, then commits; returns the batches completed meanwhile.
    fn commit_transaction(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<Vec<CompletedTuple>> {
        self.with(py, move |p| p.commit_transaction(timeout_ms)).map(completed)
    }

    fn abort_transaction(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<()> {
        self.with(py, move |p| p.abort_transaction(timeout_ms))
    }

    /// A record (copied) that no batch waits for: a transaction's checkpoint record.
    fn send_record(&self, py: Python<'_>, topic: String, partition: i32, key: Vec<u8>, value: Vec<u8>) -> PyResult<()> {
        self.with(py, move |p| p.send_record(&topic, partition, &key, &value))
    }

    /// The rows the broker refused in the transaction that failed, as refusals (taken once).
    fn take_txn_refusals(&self) -> Vec<RefusalTuple> {
        let mut guard = self.core.lock().unwrap();
        guard.as_mut().map(|p| p.take_txn_refusals()).unwrap_or_default()
            .into_iter().map(|r| (r.row, r.line, r.offset, r.code, r.reason)).collect()
    }

    /// Seconds this producer spent in Kafka faults: from an error reported while rows waited
    /// to the acknowledgement that ended it (the `ingest_csv_kafka_retry_seconds` metric).
    fn fault_seconds(&self) -> f64 {
        let guard = self.core.lock().unwrap();
        guard.as_ref().map_or(0.0, |p| p.fault_seconds())
    }

    /// librdkafka's log lines since the last call: (syslog level, text).
    fn take_logs(&self) -> Vec<(i32, String)> {
        let mut guard = self.core.lock().unwrap();
        guard.as_mut().map(|p| std::mem::take(&mut p.logs)).unwrap_or_default()
    }

    /// Makes a blocked `send` or `flush` return with InterruptedError.
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Destroys the handles; with `abort`, drops what is not acknowledged first.
    #[pyo3(signature = (abort=false))]
    fn close(&self, py: Python<'_>, abort: bool) {
        self.stop.store(true, Ordering::Relaxed);
        py.allow_threads(|| {
            let mut guard = self.core.lock().unwrap();
            if let Some(p) = guard.as_mut() {
                if abort {
                    p.abort();
                }
            }
            *guard = None; // librdkafka destroyed before the batches it points into
        });
    }
}

/// Chunk-sized buffers (a few MB each, freed as each chunk is acknowledged) get their own
/// mappings, returned to the system on free. glibc's default threshold rises to the size of
/// the largest block freed, after which such buffers come from the heap and its arenas, which
/// keep them: measured, peak RSS 98 MB on 1M rows and 108 MB on 10M; with 1 MB, 84 and 86 MB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    unsafe { mallopt(M_MMAP_THRESHOLD, 1 << 20) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

#[pymodule]
fn csvkafka_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fix_mmap_threshold();
    m.add_function(wrap_pyfunction!(cut, m)?)?;
    m.add_function(wrap_pyfunction!(murmur2, m)?)?;
    m.add_function(wrap_pyfunction!(partition_of, m)?)?;
    m.add_class::<Encoder>()?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_class::<Batch>()?;
    m.add_class::<Producer>()?;
    let names: Vec<&str> = deadletter::HEADERS.iter().map(|h| h.to_str().expect("ASCII")).collect();
    m.add("DEAD_LETTER_HEADERS", pyo3::types::PyTuple::new(m.py(), names)?)?;
    m.add("KafkaUnavailable", m.py().get_type::<KafkaUnavailable>())?;
    m.add("TransactionFailed", m.py().get_type::<TransactionFailed>())?;
    m.add("ProducerFenced", m.py().get_type::<ProducerFenced>())?;
    Ok(())
}
