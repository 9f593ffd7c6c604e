//! Which partition a sink record goes to: keyed records as the Java client's default
//! partitioner places them (`toPositive(murmur2(key)) % partitions`), keyless records
//! round-robin over *all* partitions.
//!
//! Setting the partition explicitly (instead of leaving it to librdkafka, whose default is
//! `consistent_random` and whose keyless records stick to one partition per batch) makes the
//! placement match Java producers and Kafka Streams, so a Weir job can be co-partitioned with
//! them, and guarantees that a topic with more partitions than sink tasks gets data on every
//! partition.

/// Kafka's `org.apache.kafka.common.utils.Utils.murmur2`: MurmurHash2 (32-bit) with seed
/// `0x9747b28c`, as a Java `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len();
    // Java: `int h = seed ^ length` (the length truncated to an int)
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java's switch falls through from case 3 to case 1
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
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition of a keyed record, as the Java client's default partitioner chooses it.
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    let p = to_positive(murmur2(key)) as u32 % partitions.max(1);
    p as i32
}

/// One sink task's partitioner for one topic.
#[derive(Clone, Debug)]
pub struct SinkPartitioner {
    partitions: u32,
    next: u64,
}

impl SinkPartitioner {
    /// A partitioner over `partitions` partitions for sink task `task`; the keyless
    /// round-robin starts at partition `task`, so several tasks spread evenly from the start.
    pub fn new(partitions: u32, task: u32) -> Self {
        SinkPartitioner {
            partitions: partitions.max(1),
            next: u64::from(task),
        }
    }

    /// The number of partitions this partitioner spreads over.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Spreads over `partitions` from now on if the topic grew (Kafka topics only gain
    /// partitions); returns whether it did. Keyed records then go to murmur2 over the new
    /// count, as the Java client's do after it sees the new metadata.
    pub fn grow_to(&mut self, partitions: u32) -> bool {
        if partitions > self.partitions {
            self.partitions = partitions;
            true
        } else {
            false
        }
    }

    /// The partition for a record with `key` (murmur2) or without one (round-robin).
    pub fn partition(&mut self, key: Option<&[u8]>) -> i32 {
        match key {
            Some(k) => partition_for_key(k, self.partitions),
            None => {
                let p = (self.next % u64::from(self.partitions)) as i32;
                self.next = self.next.wrapping_add(1);
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors copied from Apache Kafka's
    /// `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java` (`testMurmur2`):
    /// the Java implementation's own results.
    #[test]
    fn murmur2_matches_kafkas_java_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    /// Vectors from librdkafka's `src/rdmurmur2.c` unit test and `tests/0048-partitioner.c`
    /// (which states they were produced with the Java client via `tests/java/Murmur2Cli`);
    /// they cover the empty key and every tail length (0–3 bytes after the 4-byte blocks).
    #[test]
    fn murmur2_matches_librdkafkas_java_derived_vectors() {
        let cases: [(&[u8], u32); 7] = [
            (b"", 0x106e_08d9),
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (b"1234", 0x9fc9_7b14),
            (b"234", 0xe7c0_09ca),
            (b"34", 0x8739_30da),
            (b"4", 0x5a4b_5ca1),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as u32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyed_partition_masks_the_sign_bit_like_java() {
        // murmur2("21") = -973932308 (negative); toPositive keeps the low 31 bits:
        // -973932308 & 0x7fffffff = 1173551340, and 1173551340 % 6 = 0.
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 6), 0);
        // murmur2("abc") = 479470107, 479470107 % 6 = 3; murmur2("") = 275646681, % 6 = 3
        assert_eq!(partition_for_key(b"abc", 6), 3);
        assert_eq!(partition_for_key(b"", 6), 3);
        assert_eq!(to_positive(i32::MIN), 0);
        let mut p = SinkPartitioner::new(6, 4);
        assert_eq!(p.partition(Some(b"21")), p.partition(Some(b"21")));
    }

    #[test]
    fn keyless_records_round_robin_over_every_partition_from_the_task_index() {
        let mut p = SinkPartitioner::new(6, 1);
        let got: Vec<i32> = (0..7).map(|_| p.partition(None)).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 0, 1]);
        // two tasks writing one record each already cover two different partitions
        let mut a = SinkPartitioner::new(6, 0);
        let mut b = SinkPartitioner::new(6, 1);
        assert_ne!(a.partition(None), b.partition(None));
    }

    #[test]
    fn a_grown_topic_gets_keyless_records_on_every_partition_and_keys_rehash() {
        let mut p = SinkPartitioner::new(2, 0);
        assert!(!p.grow_to(2) && !p.grow_to(1), "topics never shrink");
        assert!(p.grow_to(5));
        assert_eq!(p.partitions(), 5);
        let mut seen: Vec<i32> = (0..5).map(|_| p.partition(None)).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.partition(Some(b"abc")), partition_for_key(b"abc", 5));
    }
}
