//! Kafka's key partitioners, so that the producer can hand librdkafka one batch per partition.
//!
//! Why: a batch left to librdkafka's partitioner costs a hash, a lock and a queue insert per
//! message; one `rd_kafka_produce_batch` per partition enqueues the whole run at once.
//! `murmur2` is the Java client's (`Utils.murmur2`, then `toPositive(h) % n`), so a key lands
//! where Kafka Streams, Connect or any Java producer put it; `consistent` is librdkafka's CRC-32.
//! With the `_random` variants, keyless messages go to one partition per batch, as librdkafka's
//! sticky partitioning does per linger window.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Partitioner {
    Murmur2 { random_keyless: bool },
    Consistent { random_keyless: bool },
}

impl Partitioner {
    /// The partitioner librdkafka's `partitioner` property names, if it is one of ours (others,
    /// `random` and `fnv1a`, are left to librdkafka).
    pub fn from_name(name: &str) -> Option<Partitioner> {
        Some(match name {
            "murmur2" => Partitioner::Murmur2 { random_keyless: false },
            "murmur2_random" => Partitioner::Murmur2 { random_keyless: true },
            "consistent" => Partitioner::Consistent { random_keyless: false },
            "consistent_random" => Partitioner::Consistent { random_keyless: true },
            _ => return None,
        })
    }

    /// The partition of a message with `key` (None: keyless), among `count`; `sticky` is the
    /// partition keyless messages of this batch share.
    pub fn partition(self, key: Option<&[u8]>, count: u32, sticky: u32) -> u32 {
        match (self, key) {
            (Partitioner::Murmur2 { random_keyless: true }, None)
            | (Partitioner::Consistent { random_keyless: true }, None) => sticky,
            (Partitioner::Murmur2 { .. }, k) => (murmur2(k.unwrap_or(b"")) & 0x7fff_ffff) % count,
            (Partitioner::Consistent { .. }, k) => crc32(k.unwrap_or(b"")) % count,
        }
    }
}

pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC: [u32; 256] = crc_table();

/// zlib's CRC-32, as librdkafka's `consistent` partitioner computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_murmur2_vectors() {
        // From the Java client's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 5] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k) as i32, want);
        }
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
