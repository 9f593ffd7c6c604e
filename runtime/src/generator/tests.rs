//! Behaviour of the generators: determinism, seeking, partitioning, the Nexmark mix, the
//! ad-event rates, and option errors.

use super::nexmark::{event_kind, EventKind};
use super::*;
use std::collections::{BTreeMap, HashMap};
use weir_crds::pipeline::{GeneratorKind, GeneratorSpec};

fn spec(kind: GeneratorKind, seed: u64, count: Option<u64>, partitions: u32) -> GeneratorSpec {
    GeneratorSpec {
        kind,
        seed,
        count,
        partitions,
        ..GeneratorSpec::default()
    }
}

fn with_options(mut spec: GeneratorSpec, options: serde_json::Value) -> GeneratorSpec {
    if let serde_json::Value::Object(map) = options {
        spec.options = map.into_iter().collect::<BTreeMap<_, _>>();
    }
    spec
}

fn drain(spec: &GeneratorSpec, partition: u32) -> Vec<(i64, Value)> {
    let mut generator = Generator::new(spec, partition).expect("valid spec");
    std::iter::from_fn(|| generator.next()).collect()
}

const KINDS: [GeneratorKind; 2] = [GeneratorKind::Nexmark, GeneratorKind::AdEvents];

#[test]
fn same_seed_same_events_other_seed_other_events() {
    for kind in KINDS {
        let a = drain(&spec(kind, 7, Some(500), 1), 0);
        let b = drain(&spec(kind, 7, Some(500), 1), 0);
        let c = drain(&spec(kind, 8, Some(500), 1), 0);
        assert_eq!(a.len(), 500);
        assert_eq!(a, b, "{kind:?}: same seed");
        assert_ne!(a, c, "{kind:?}: other seed");
    }
}

#[test]
fn seek_then_next_is_the_kth_event() {
    for kind in KINDS {
        for partitions in [1, 3] {
            let s = spec(kind, 42, Some(3000), partitions);
            let all = drain(&s, partitions - 1);
            for k in [0u64, 1, 17, 499, 998] {
                let mut generator = Generator::new(&s, partitions - 1).unwrap();
                generator.seek(k);
                assert_eq!(generator.offset(), k);
                assert_eq!(
                    generator.next().as_ref(),
                    all.get(k as usize),
                    "{kind:?} P={partitions} k={k}"
                );
                assert_eq!(generator.offset(), k + 1);
            }
            let mut generator = Generator::new(&s, partitions - 1).unwrap();
            generator.seek(all.len() as u64);
            assert_eq!(generator.next(), None, "{kind:?}: seek past the end");
        }
    }
}

#[test]
fn partitions_split_every_index_exactly_once() {
    for kind in KINDS {
        let whole = drain(&spec(kind, 3, Some(1001), 1), 0);
        let s = spec(kind, 3, Some(1001), 7);
        let mut parts: Vec<Vec<(i64, Value)>> = (0..7).map(|p| drain(&s, p)).collect();
        for (p, part) in parts.iter().enumerate() {
            let generator = Generator::new(&s, p as u32).unwrap();
            assert_eq!(
                generator.len(),
                Some(part.len() as u64),
                "{kind:?} partition {p}"
            );
        }
        // Interleaving the partitions round-robin gives back the single-partition stream.
        let mut merged = Vec::new();
        for k in 0.. {
            let mut any = false;
            for part in parts.iter_mut() {
                if k < part.len() {
                    merged.push(part[k].clone());
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        assert_eq!(merged, whole, "{kind:?}");
    }
}

#[test]
fn a_partition_beyond_the_spec_is_an_error() {
    let err = Generator::new(&spec(GeneratorKind::Nexmark, 0, None, 2), 2)
        .err()
        .expect("partition 2 of 2");
    assert_eq!(
        err,
        GeneratorError::Partition {
            partition: 2,
            partitions: 2
        }
    );
}

#[test]
fn nexmark_mix_is_1_3_46_per_50_events() {
    let events = drain(&spec(GeneratorKind::Nexmark, 1, Some(50_000), 1), 0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (i, (_, e)) in events.iter().enumerate() {
        let kind = e.get("type").as_str().unwrap_or_default().to_string();
        let expected = match event_kind(i as u64) {
            EventKind::Person => "person",
            EventKind::Auction => "auction",
            EventKind::Bid => "bid",
        };
        assert_eq!(kind, expected, "event {i}");
        *counts.entry(kind).or_default() += 1;
    }
    assert_eq!(counts["person"], 1000);
    assert_eq!(counts["auction"], 3000);
    assert_eq!(counts["bid"], 46_000);
}

#[test]
fn nexmark_ids_and_hot_keys_follow_the_reference() {
    let events = drain(&spec(GeneratorKind::Nexmark, 5, Some(50_000), 1), 0);
    let ids = |t: &str, field: &str| -> Vec<i64> {
        events
            .iter()
            .filter(|(_, e)| e.get("type").as_str() == Some(t))
            .filter_map(|(_, e)| e.get(field).as_i64())
            .collect()
    };
    let people = ids("person", "id");
    let auctions = ids("auction", "id");
    assert_eq!(people[..3], [1000, 1001, 1002]);
    assert_eq!(auctions[..4], [1000, 1001, 1002, 1003]);
    let last_auction = *auctions.last().unwrap();
    let bid_auctions = ids("bid", "auction");
    assert!(bid_auctions
        .iter()
        .all(|a| (1000..=last_auction + 10).contains(a)));
    // Hot auctions: with hotAuctionRatio 2, about half the bids go to one auction per
    // batch of 100; the most frequent auction gets far more than a uniform share.
    let mut per_auction: HashMap<i64, usize> = HashMap::new();
    for a in &bid_auctions {
        *per_auction.entry(*a).or_default() += 1;
    }
    let max = per_auction.values().max().copied().unwrap_or(0);
    assert!(
        max > 10 * bid_auctions.len() / per_auction.len(),
        "max {max}"
    );
    let prices = ids("bid", "price");
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    let categories = ids("auction", "category");
    assert!(categories.iter().all(|c| (10..15).contains(c)));
}

#[test]
fn event_time_is_the_record_time_and_follows_the_options() {
    let s = with_options(
        spec(GeneratorKind::Nexmark, 1, Some(2000), 1),
        serde_json::json!({"startTime": 1000, "eventIntervalMicros": 2000}),
    );
    for (i, (ts, e)) in drain(&s, 0).iter().enumerate() {
        assert_eq!(*ts, 1000 + 2 * i as i64);
        assert_eq!(e.get("dateTime").as_i64(), Some(*ts));
    }
    let s = with_options(
        spec(GeneratorKind::Nexmark, 1, Some(5000), 1),
        serde_json::json!({"outOfOrderMs": 200}),
    );
    let events = drain(&s, 0);
    let mut out_of_order = 0;
    for (i, (ts, _)) in events.iter().enumerate() {
        let in_order = DEFAULT_START_TIME_MS + i as i64;
        assert!((in_order - 200..=in_order).contains(ts), "event {i}: {ts}");
        if i > 0 && *ts < events[i - 1].0 {
            out_of_order += 1;
        }
    }
    assert!(out_of_order > 100, "{out_of_order} events out of order");
}

/// Ad events at 10 events per second of event time: 30 lanes, so sessions complete quickly.
fn ad_events(count: u64, options: serde_json::Value) -> Vec<(i64, Value)> {
    let mut all = serde_json::json!({"eventIntervalMicros": 100_000});
    if let (Some(all), serde_json::Value::Object(more)) = (all.as_object_mut(), options) {
        all.extend(more);
    }
    drain(
        &with_options(spec(GeneratorKind::AdEvents, 11, Some(count), 1), all),
        0,
    )
}

#[test]
fn ad_events_rates_and_sessions() {
    let events = ad_events(200_000, serde_json::json!({}));
    let str_of = |e: &Value, f: &str| e.get(f).as_str().unwrap_or_default().to_string();
    let mut impressions: HashMap<String, (usize, i64)> = HashMap::new();
    let mut clicks: Vec<(usize, String, i64)> = Vec::new();
    let mut heartbeats: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for (i, (ts, e)) in events.iter().enumerate() {
        assert_eq!(e.get("ts").as_i64(), Some(*ts));
        let id = str_of(e, "requestId");
        match e.get("type").as_str() {
            Some("impression") => {
                assert!(
                    impressions.insert(id, (i, *ts)).is_none(),
                    "one impression per request"
                );
            }
            Some("click") => clicks.push((i, id, *ts)),
            Some("heartbeat") => heartbeats
                .entry(id)
                .or_default()
                .push((*ts, e.get("playMs").as_i64().unwrap_or(-1))),
            other => panic!("unexpected type {other:?}"),
        }
    }
    let click_rate = clicks.len() as f64 / impressions.len() as f64;
    assert!((click_rate - 0.1).abs() < 0.01, "click rate {click_rate}");

    // Clicks well inside the stream have their impression: same requestId, ts at or after it.
    let (mut same_ms, mut early, mut checked) = (0, 0, 0);
    for (i, id, ts) in clicks.iter().filter(|(i, _, _)| *i < 199_000) {
        let (imp_i, imp_ts) = impressions[id];
        assert!(*ts >= imp_ts && *ts - imp_ts < 3000, "click {id}");
        same_ms += usize::from(*ts == imp_ts);
        early += usize::from(*i < imp_i);
        checked += 1;
    }
    let (same_ms, early) = (
        same_ms as f64 / checked as f64,
        early as f64 / checked as f64,
    );
    assert!((same_ms - 0.1).abs() < 0.03, "same-ms clicks {same_ms}");
    assert!((early - 0.05).abs() < 0.02, "early clicks {early}");

    // Heartbeats every 3 s after their click; some sessions play 6 minutes, some stop short.
    let click_ts: HashMap<&String, i64> = clicks.iter().map(|(_, id, ts)| (id, *ts)).collect();
    for (id, beats) in &heartbeats {
        assert!(
            impressions.contains_key(id),
            "heartbeats of {id} without an impression"
        );
        for (k, (ts, play_ms)) in beats.iter().enumerate() {
            let k = k as i64;
            if let Some(c) = click_ts.get(id) {
                assert_eq!(*ts, c + 3000 * (k + 1), "{id}");
            }
            if k > 0 {
                assert_eq!(ts - beats[k as usize - 1].0, 3000);
                assert_eq!(play_ms - beats[k as usize - 1].1, 3000);
            }
        }
    }
    let full = heartbeats.values().filter(|b| b.len() >= 120).count();
    let short = heartbeats.values().filter(|b| b.len() < 60).count();
    assert!(full > 0 && short > 0, "{full} full, {short} short sessions");
    let with_heartbeats = heartbeats.len() as f64 / clicks.len() as f64;
    assert!(
        (with_heartbeats - 0.3).abs() < 0.05,
        "sessions with heartbeats {with_heartbeats}"
    );
}

#[test]
fn ad_event_options_change_the_rates() {
    let events = ad_events(
        50_000,
        serde_json::json!({"clickRate": 0.5, "heartbeatSessions": 0, "keys": 3}),
    );
    let count = |t: &str| {
        events
            .iter()
            .filter(|(_, e)| e.get("type").as_str() == Some(t))
            .count()
    };
    let rate = count("click") as f64 / count("impression") as f64;
    assert!((rate - 0.5).abs() < 0.03, "click rate {rate}");
    assert_eq!(count("heartbeat"), 0);
    let ads: std::collections::HashSet<_> = events
        .iter()
        .map(|(_, e)| e.get("adId").to_json())
        .collect();
    assert_eq!(ads.len(), 3);
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let cases = [
        (
            GeneratorKind::AdEvents,
            serde_json::json!({"clickRate": 1.5}),
            "clickRate",
        ),
        (
            GeneratorKind::AdEvents,
            serde_json::json!({"keys": 0}),
            "keys",
        ),
        (
            GeneratorKind::AdEvents,
            serde_json::json!({"clickrate": 0.2}),
            "clickrate",
        ),
        (
            GeneratorKind::Nexmark,
            serde_json::json!({"hotAuctionRatio": "x"}),
            "hotAuctionRatio",
        ),
        (
            GeneratorKind::Nexmark,
            serde_json::json!({"eventIntervalMicros": 0}),
            "eventIntervalMicros",
        ),
        (
            GeneratorKind::Nexmark,
            serde_json::json!({"clickRate": 0.1}),
            "clickRate",
        ),
        (
            GeneratorKind::Nexmark,
            serde_json::json!({"outOfOrderMs": -1}),
            "outOfOrderMs",
        ),
    ];
    for (kind, options, name) in cases {
        let s = with_options(spec(kind, 0, None, 1), options.clone());
        let err = Generator::new(&s, 0).err().expect("an error");
        assert!(
            err.to_string().contains(&format!("'{name}'")),
            "{options}: {err}"
        );
    }
}

#[test]
fn unbounded_generators_keep_going() {
    let mut generator = Generator::new(&spec(GeneratorKind::AdEvents, 0, None, 4), 1).unwrap();
    assert_eq!(generator.len(), None);
    generator.seek(10_000_000);
    assert!(generator.next().is_some());
}

#[test]
fn nexmark_padding_letters_are_uniform() {
    let events = drain(&spec(GeneratorKind::Nexmark, 3, Some(20_000), 1), 0);
    let mut counts = [0u64; 26];
    let mut total = 0u64;
    for (_, e) in &events {
        let extra = e.get("extra").as_str().unwrap();
        for b in extra.bytes() {
            assert!(b.is_ascii_lowercase(), "{extra}");
            counts[usize::from(b - b'a')] += 1;
            total += 1;
        }
    }
    assert!(total > 1_000_000, "{total} letters");
    let expected = total as f64 / 26.0;
    for (i, c) in counts.iter().enumerate() {
        let dev = (*c as f64 - expected).abs() / expected;
        assert!(
            dev < 0.03,
            "letter {} is off by {:.2}%",
            char::from(b'a' + i as u8),
            dev * 100.0
        );
    }
}
