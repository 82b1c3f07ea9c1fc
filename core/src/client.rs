//! One librdkafka producer handle, through librdkafka's public C API (rdkafka.h).
//!
//! Every delivery report lands here with the message's opaque (which batch, which row): a
//! success in `acked` (a push, in C: no Python runs per message), a failure in `failures`.
//! Callbacks run inside `poll`/`flush`, on the calling thread, logs included (`log.queue`).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

use rdkafka_sys::bindings as rd;

pub const ERR_FATAL: i32 = -150;
pub const ERR_QUEUE_FULL: i32 = -184;
pub const ERR_MSG_SIZE_TOO_LARGE: i32 = 10;

pub struct Failure {
    pub opaque: usize,
    pub err: i32,
    pub partition: i32,
}

#[derive(Default)]
pub struct Callbacks {
    /// Opaques of the messages acknowledged since the last look.
    pub acked: Vec<usize>,
    pub failures: Vec<Failure>,
    pub last_error: String,
    /// Errors reported so far (failed deliveries and client errors): the fault clock starts
    /// when this moves.
    pub errors: u64,
    /// The fatal error's code and reason.
    pub fatal: Option<(i32, String)>,
    /// (syslog level, text), handed to Python's logging by the caller.
    pub logs: Vec<(i32, String)>,
}

pub struct Client {
    rk: *mut rd::rd_kafka_t,
    topics: HashMap<String, *mut rd::rd_kafka_topic_t>,
    // Boxed: librdkafka holds its address as the handle's opaque.
    cb: Box<Mutex<Callbacks>>,
}

// The handle is used by one thread at a time (the producer's Mutex); librdkafka is thread-safe.
unsafe impl Send for Client {}

pub fn err_name(err: i32) -> String {
    match rd::rd_kafka_resp_err_t::try_from(err) {
        Ok(code) => unsafe { CStr::from_ptr(rd::rd_kafka_err2str(code)) }.to_string_lossy().into_owned(),
        Err(_) => format!("Kafka error {err}"),
    }
}

/// Reads a message's error code as the integer it is (the binding's enum would be undefined
/// behaviour for a code newer than the binding).
///
/// # Safety
/// `m` points to a valid message.
pub unsafe fn msg_err(m: *const rd::rd_kafka_message_t) -> i32 {
    *(std::ptr::addr_of!((*m).err) as *const i32)
}

unsafe extern "C" fn on_delivery(
    _rk: *mut rd::rd_kafka_t, m: *const rd::rd_kafka_message_t, opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    let err = msg_err(m);
    let cb = &*(opaque as *const Mutex<Callbacks>);
    let mut cb = cb.lock().unwrap();
    if err == 0 {
        cb.acked.push((*m)._private as usize);
        return;
    }
    cb.failures.push(Failure { opaque: (*m)._private as usize, err, partition: (*m).partition });
    cb.last_error = err_name(err);
    cb.errors += 1;
}

unsafe extern "C" fn on_error(rk: *mut rd::rd_kafka_t, err: c_int, reason: *const c_char, opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    let cb = &*(opaque as *const Mutex<Callbacks>);
    let mut cb = cb.lock().unwrap();
    cb.last_error = if reason.is_null() { err_name(err) } else { CStr::from_ptr(reason).to_string_lossy().into_owned() };
    cb.errors += 1;
    if err == ERR_FATAL {
        let mut buf = [0 as c_char; 512];
        let code = rd::rd_kafka_fatal_error(rk, buf.as_mut_ptr(), buf.len()) as i32;
        cb.fatal = Some((code, CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()));
    }
}

unsafe extern "C" fn on_log(rk: *const rd::rd_kafka_t, level: c_int, fac: *const c_char, buf: *const c_char) {
    let opaque = rd::rd_kafka_opaque(rk);
    if opaque.is_null() {
        return;
    }
    let cb = &*(opaque as *const Mutex<Callbacks>);
    let text = format!(
        "{} {}",
        if fac.is_null() { "".into() } else { CStr::from_ptr(fac).to_string_lossy() },
        if buf.is_null() { "".into() } else { CStr::from_ptr(buf).to_string_lossy() },
    );
    cb.lock().unwrap().logs.push((level, text));
}

impl Client {
    pub fn new(config: &[(String, String)]) -> Result<Client, String> {
        let mut errstr = [0 as c_char; 512];
        let cb: Box<Mutex<Callbacks>> = Box::default();
        unsafe {
            let conf = rd::rd_kafka_conf_new();
            let mut settings: Vec<(String, String)> = config.to_vec();
            settings.push(("log.queue".into(), "true".into()));
            for (k, v) in &settings {
                let (ck, cv) = (cstring(k)?, cstring(v)?);
                if rd::rd_kafka_conf_set(conf, ck.as_ptr(), cv.as_ptr(), errstr.as_mut_ptr(), errstr.len())
                    != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK
                {
                    rd::rd_kafka_conf_destroy(conf);
                    return Err(format!("producer property {k}={v}: {}", text(&errstr)));
                }
            }
            rd::rd_kafka_conf_set_opaque(conf, &*cb as *const Mutex<Callbacks> as *mut c_void);
            rd::rd_kafka_conf_set_dr_msg_cb(conf, Some(on_delivery));
            rd::rd_kafka_conf_set_error_cb(conf, Some(on_error));
            rd::rd_kafka_conf_set_log_cb(conf, Some(on_log));
            let rk = rd::rd_kafka_new(rd::rd_kafka_type_t::RD_KAFKA_PRODUCER, conf, errstr.as_mut_ptr(), errstr.len());
            if rk.is_null() {
                // On failure the configuration is not taken over.
                rd::rd_kafka_conf_destroy(conf);
                return Err(format!("cannot create the producer: {}", text(&errstr)));
            }
            rd::rd_kafka_set_log_queue(rk, std::ptr::null_mut());
            Ok(Client { rk, topics: HashMap::new(), cb })
        }
    }

    pub fn rk(&self) -> *mut rd::rd_kafka_t {
        self.rk
    }

    pub fn topic(&mut self, name: &str) -> Result<*mut rd::rd_kafka_topic_t, String> {
        if let Some(&t) = self.topics.get(name) {
            return Ok(t);
        }
        let cname = cstring(name)?;
        let t = unsafe { rd::rd_kafka_topic_new(self.rk, cname.as_ptr(), std::ptr::null_mut()) };
        if t.is_null() {
            return Err(format!("cannot use topic {name}"));
        }
        self.topics.insert(name.to_string(), t);
        Ok(t)
    }

    pub fn poll(&self, ms: i32) {
        unsafe { rd::rd_kafka_poll(self.rk, ms) };
    }

    pub fn callbacks(&self) -> std::sync::MutexGuard<'_, Callbacks> {
        self.cb.lock().unwrap()
    }

    /// The topic's partition count from the broker, or None (unknown topic, broker down).
    pub fn partition_count(&mut self, topic: &str, timeout_ms: i32) -> Option<u32> {
        let rkt = self.topic(topic).ok()?;
        unsafe {
            let mut md: *const rd::rd_kafka_metadata_t = std::ptr::null();
            if rd::rd_kafka_metadata(self.rk, 0, rkt, &mut md, timeout_ms) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            let mut count = None;
            for i in 0..(*md).topic_cnt as usize {
                let t = &*(*md).topics.add(i);
                let err = *(std::ptr::addr_of!(t.err) as *const i32);
                if err == 0 && t.partition_cnt > 0 {
                    count = Some(t.partition_cnt as u32);
                }
            }
            rd::rd_kafka_metadata_destroy(md);
            count
        }
    }

    /// Drops every message not yet acknowledged (a stop, a fatal error).
    pub fn purge(&self) {
        unsafe {
            rd::rd_kafka_purge(self.rk, (rd::RD_KAFKA_PURGE_F_QUEUE | rd::RD_KAFKA_PURGE_F_INFLIGHT) as c_int);
            rd::rd_kafka_poll(self.rk, 0);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        unsafe {
            for (_, t) in self.topics.drain() {
                rd::rd_kafka_topic_destroy(t);
            }
            rd::rd_kafka_destroy(self.rk); // joins librdkafka's threads: nothing points into us after
        }
    }
}

pub fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("NUL byte in {s:?}"))
}

fn text(buf: &[c_char]) -> String {
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}
