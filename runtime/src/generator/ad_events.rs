//! The ad-events model: impressions, clicks and playback heartbeats, laid out so that every
//! event is a pure function of `(seed, global index)`.
//!
//! # Layout
//!
//! Global indices are dealt round-robin to `L` *lanes* (`lane = index % L`, lane step
//! `j = index / L`), with `L = 3 s / eventIntervalMicros`, so consecutive steps of a lane are
//! one heartbeat period (3 s) of event time apart. There are two kinds of lanes, in the proportion that gives the
//! requested rates:
//!
//! - *playback lanes*: blocks of [`PLAYBACK_BLOCK`] steps, each holding two sessions back to
//!   back, `[impression, click, h1 heartbeats, impression, click, h2 heartbeats]` with
//!   `h1 + h2 = 130` and `h1` uniform in `1..=129`: some sessions play 6 minutes (120
//!   heartbeats or more), the rest stop short;
//! - *click lanes*: pairs of steps, each an impression and its click (with probability chosen
//!   to give `clickRate`) or two impressions without clicks.
//!
//! A click follows its impression by one step, or precedes it (`earlyClickRate`), and its
//! `ts` is its impression's (`sameMsClickRate`) or up to 3 s later. Heartbeat `k` has
//! `ts = click.ts + 3000 k` and `playMs = 3000 k`. A playback lane starts at its first
//! block's first or second session, at random, so lanes are out of step and no session is cut
//! by the start of the stream.

use super::{mix, Options, Rng, Timing};
use crate::generator::GeneratorError;
use std::sync::Arc;
use weir_expr::{Map, Value};

/// Event time between heartbeats (and between consecutive steps of a lane), ms.
pub const HEARTBEAT_PERIOD_MS: i64 = 3000;
/// Heartbeats shared by the two sessions of a playback block.
pub const HEARTBEATS_PER_BLOCK: u64 = 130;
/// Steps in a playback block: two impressions, two clicks and the heartbeats.
pub const PLAYBACK_BLOCK: u64 = HEARTBEATS_PER_BLOCK + 4;

/// The ad-events generator's configuration.
pub struct AdEvents {
    seed: u64,
    lanes: u64,
    /// Fraction of lanes that are playback lanes.
    playback_share: f64,
    /// Probability that a click-lane pair is an impression with its click.
    pair_click_rate: f64,
    same_ms_click_rate: f64,
    early_click_rate: f64,
    ads: u64,
    users: u64,
    keys: Keys,
}

/// The field names and type values, allocated once.
struct Keys {
    kind: Arc<str>,
    request_id: Arc<str>,
    ad_id: Arc<str>,
    user_id: Arc<str>,
    ts: Arc<str>,
    play_ms: Arc<str>,
    impression: Value,
    click: Value,
    heartbeat: Value,
}

/// What a lane step holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An impression of the session.
    Impression,
    /// The session's click.
    Click,
    /// The session's `k`-th heartbeat (1-based).
    Heartbeat(u64),
}

/// One session: an impression, maybe a click, maybe heartbeats.
struct Session {
    /// Identifies the session (and seeds its random choices).
    key: u64,
    /// The lane step of its first event.
    first_step: u64,
    clicked: bool,
}

impl AdEvents {
    pub(crate) fn from_options(
        seed: u64,
        timing: &Timing,
        options: &mut Options<'_>,
    ) -> Result<Self, GeneratorError> {
        let click_rate = options.fraction("clickRate", 0.1)?;
        let same_ms_click_rate = options.fraction("sameMsClickRate", 0.1)?;
        let early_click_rate = options.fraction("earlyClickRate", 0.05)?;
        let heartbeat_sessions = options.fraction("heartbeatSessions", 0.3)?;
        let ads = options.uint_at_least("keys", 1000, 1)?;
        let users = options.uint_at_least("users", 100_000, 1)?;
        let lanes = (HEARTBEAT_PERIOD_MS as u64 * 1000 / timing.interval_us).max(1);
        let (playback_share, pair_click_rate) = shares(click_rate, heartbeat_sessions);
        Ok(AdEvents {
            seed,
            lanes,
            playback_share,
            pair_click_rate,
            same_ms_click_rate,
            early_click_rate,
            ads,
            users,
            keys: Keys {
                kind: "type".into(),
                request_id: "requestId".into(),
                ad_id: "adId".into(),
                user_id: "userId".into(),
                ts: "ts".into(),
                play_ms: "playMs".into(),
                impression: Value::str("impression"),
                click: Value::str("click"),
                heartbeat: Value::str("heartbeat"),
            },
        })
    }

    /// Event `index`: (event time ms, record).
    pub(crate) fn event(&self, index: u64, timing: &Timing) -> (i64, Value) {
        let lane = index % self.lanes;
        let step = index / self.lanes;
        let (session, what) = if self.is_playback_lane(lane) {
            self.playback_step(lane, step)
        } else {
            self.click_lane_step(lane, step)
        };
        self.record(lane, &session, what, timing)
    }

    /// Whether `lane` is a playback lane: spreads `playback_share` of the lanes evenly.
    fn is_playback_lane(&self, lane: u64) -> bool {
        let f = self.playback_share;
        ((lane + 1) as f64 * f).floor() > (lane as f64 * f).floor()
    }

    /// Heartbeats of the first session of block `block` of playback lane `lane`.
    fn first_heartbeats(&self, lane: u64, block: u64) -> u64 {
        1 + Rng::new(self.seed, session_key(lane, block, 0)).below(HEARTBEATS_PER_BLOCK - 1)
    }

    /// Where a playback lane starts in its first block: at its first or its second session,
    /// at random, so that lanes are out of step and no session is cut by the stream start.
    fn playback_phase(&self, lane: u64) -> u64 {
        if mix(self.seed ^ mix(lane ^ 0xA5A5_0000_0000_0001)) & 1 == 0 {
            0
        } else {
            self.first_heartbeats(lane, 0) + 2
        }
    }

    fn playback_step(&self, lane: u64, step: u64) -> (Session, Step) {
        let phase = self.playback_phase(lane);
        let shifted = step + phase;
        let block = shifted / PLAYBACK_BLOCK;
        let at = shifted % PLAYBACK_BLOCK;
        let h1 = self.first_heartbeats(lane, block);
        // The first session takes steps 0..h1+2, the second the rest.
        let (start, sub, at_in_session) = if at < h1 + 2 {
            (0, 1, at)
        } else {
            (h1 + 2, 2, at - h1 - 2)
        };
        let session = Session {
            key: session_key(lane, block, sub),
            // Never negative: the phase is a session start.
            first_step: (block * PLAYBACK_BLOCK + start).saturating_sub(phase),
            clicked: true,
        };
        let what = match at_in_session {
            0 | 1 => self.impression_or_click(&session, at_in_session),
            k => Step::Heartbeat(k - 1),
        };
        (session, what)
    }

    fn click_lane_step(&self, lane: u64, step: u64) -> (Session, Step) {
        let pair = step / 2;
        let at = step % 2;
        let pair_key = session_key(lane, pair, 3);
        if Rng::new(self.seed, pair_key).chance(self.pair_click_rate) {
            let session = Session {
                key: pair_key,
                first_step: pair * 2,
                clicked: true,
            };
            let what = self.impression_or_click(&session, at);
            (session, what)
        } else {
            // Two impressions without clicks.
            let session = Session {
                key: session_key(lane, pair, 4 + at),
                first_step: step,
                clicked: false,
            };
            (session, Step::Impression)
        }
    }

    /// Step `at` (0 or 1) of a clicked session: the impression comes first unless the
    /// session's click is early.
    fn impression_or_click(&self, session: &Session, at: u64) -> Step {
        let early = self.choices(session).early;
        match (at, early) {
            (0, false) | (1, true) => Step::Impression,
            _ => Step::Click,
        }
    }

    fn choices(&self, session: &Session) -> Choices {
        let mut rng = Rng::new(self.seed, session.key);
        let ad = rng.below(self.ads);
        let user = rng.below(self.users);
        let same_ms = rng.chance(self.same_ms_click_rate);
        let early = rng.chance(self.early_click_rate);
        let delay = 1 + rng.below(HEARTBEAT_PERIOD_MS as u64 - 1) as i64;
        Choices {
            ad,
            user,
            early,
            click_delay_ms: if same_ms { 0 } else { delay },
        }
    }

    fn record(&self, lane: u64, session: &Session, what: Step, timing: &Timing) -> (i64, Value) {
        let k = &self.keys;
        let c = self.choices(session);
        let session_index = session
            .first_step
            .saturating_mul(self.lanes)
            .saturating_add(lane);
        let impression_ts = timing.index_time(session_index) - timing.jitter(session.key);
        let click_ts = impression_ts + c.click_delay_ms;
        let (kind, ts) = match what {
            Step::Impression => (k.impression.clone(), impression_ts),
            Step::Click => (k.click.clone(), click_ts),
            Step::Heartbeat(n) => (
                k.heartbeat.clone(),
                click_ts.saturating_add(HEARTBEAT_PERIOD_MS.saturating_mul(n as i64)),
            ),
        };
        debug_assert!(session.clicked || what == Step::Impression);
        let mut entries = vec![
            (k.kind.clone(), kind),
            (
                k.request_id.clone(),
                Value::str(&format!("{:016x}", mix(self.seed ^ session.key))),
            ),
            (k.ad_id.clone(), Value::str(&format!("ad-{}", c.ad))),
            (k.user_id.clone(), Value::str(&format!("u-{}", c.user))),
            (k.ts.clone(), Value::Int(ts)),
        ];
        if let Step::Heartbeat(n) = what {
            entries.push((
                k.play_ms.clone(),
                Value::Int(HEARTBEAT_PERIOD_MS.saturating_mul(n as i64)),
            ));
        }
        (ts, Value::Map(Arc::new(Map { entries })))
    }
}

/// A session's random choices.
struct Choices {
    ad: u64,
    user: u64,
    early: bool,
    click_delay_ms: i64,
}

/// A session key from its lane, block (or pair) and position in it.
fn session_key(lane: u64, block: u64, sub: u64) -> u64 {
    mix(mix(lane) ^ block.rotate_left(17) ^ sub.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The share of playback lanes and the click probability of a click-lane pair that give
/// `click_rate` clicks per impression, `heartbeat_sessions` of them in playback lanes.
///
/// Per lane step, a playback lane yields `a = 2 / PLAYBACK_BLOCK` clicks (and as many
/// impressions); a click lane yields `p / 2` clicks and `(2 - p) / 2` impressions. With `f`
/// the playback share: `f a = hb (f a + (1 - f) p / 2)` and
/// `f a + (1 - f) p / 2 = c (f a + (1 - f) (2 - p) / 2)`.
fn shares(click_rate: f64, heartbeat_sessions: f64) -> (f64, f64) {
    let (c, hb) = (click_rate, heartbeat_sessions);
    if c == 0.0 {
        return (0.0, 0.0);
    }
    if hb == 0.0 {
        return (0.0, (2.0 * c / (1.0 + c)).min(1.0));
    }
    let a = 2.0 / PLAYBACK_BLOCK as f64;
    // From both equations: f a (1/hb - c + c (1 - hb) / hb) = c (1 - f).
    let k1 = a * (1.0 / hb - c + c * (1.0 - hb) / hb);
    let f = (c / (k1 + c)).clamp(0.0, 1.0);
    let p = if f >= 1.0 {
        0.0
    } else {
        (f * a * (1.0 - hb) / hb / ((1.0 - f) / 2.0)).clamp(0.0, 1.0)
    };
    (f, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_give_the_requested_rates() {
        for (c, hb) in [(0.1, 0.3), (0.05, 0.5), (0.5, 0.1), (0.2, 1.0), (0.3, 0.0)] {
            let (f, p) = shares(c, hb);
            let a = 2.0 / PLAYBACK_BLOCK as f64;
            let clicks = f * a + (1.0 - f) * p / 2.0;
            let impressions = f * a + (1.0 - f) * (2.0 - p) / 2.0;
            assert!(
                (clicks / impressions - c).abs() < 1e-9,
                "click rate for {c}, {hb}"
            );
            assert!(
                (f * a / clicks - hb).abs() < 1e-9,
                "heartbeat share for {c}, {hb}"
            );
        }
    }
}
