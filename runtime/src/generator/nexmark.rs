//! The Nexmark model (Person, Auction, Bid), following the reference generator of the
//! Beam/Flink Nexmark benchmark: the event kind, the ids and the hot keys are derived from
//! the global event index exactly as there; the other fields are drawn from a random stream
//! seeded by `(seed, index)`.

use super::{Options, Rng, Timing};
use crate::generator::GeneratorError;
use std::sync::{Arc, OnceLock};
use weir_expr::{Map, Value};

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
/// Events per Person/Auction/Bid cycle.
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// The first person id.
pub const FIRST_PERSON_ID: i64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const HOT_CHANNELS_RATIO: u64 = 2;
const CHANNELS_NUMBER: u64 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// Which of the three events global index `index` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid on an auction.
    Bid,
}

/// The kind of event `index`: 1 person, then 3 auctions, then 46 bids in every 50 events.
pub fn event_kind(index: u64) -> EventKind {
    let rem = index % PROPORTION_DENOMINATOR;
    if rem < PERSON_PROPORTION {
        EventKind::Person
    } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
        EventKind::Auction
    } else {
        EventKind::Bid
    }
}

/// The 0-based id of the last person created at or before event `index`.
fn last_base0_person_id(index: u64) -> u64 {
    let epoch = index / PROPORTION_DENOMINATOR;
    let offset = index % PROPORTION_DENOMINATOR;
    // Past this epoch's people: the last of them.
    let offset = if offset >= PERSON_PROPORTION {
        PERSON_PROPORTION - 1
    } else {
        offset
    };
    epoch * PERSON_PROPORTION + offset
}

/// The 0-based id of the last auction created at or before event `index` (saturating at 0
/// before the first auction).
fn last_base0_auction_id(index: u64) -> u64 {
    let mut epoch = index / PROPORTION_DENOMINATOR;
    let mut offset = index % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // Before this epoch's first auction: the last auction of the previous epoch.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

fn id(base0: u64, first: i64) -> Value {
    Value::Int(first.saturating_add(i64::try_from(base0).unwrap_or(i64::MAX)))
}

/// The field names, allocated once and shared by every record.
struct Keys {
    kind: Arc<str>,
    id: Arc<str>,
    name: Arc<str>,
    email: Arc<str>,
    credit_card: Arc<str>,
    city: Arc<str>,
    state: Arc<str>,
    date_time: Arc<str>,
    extra: Arc<str>,
    item_name: Arc<str>,
    description: Arc<str>,
    initial_bid: Arc<str>,
    reserve: Arc<str>,
    expires: Arc<str>,
    seller: Arc<str>,
    category: Arc<str>,
    auction: Arc<str>,
    bidder: Arc<str>,
    price: Arc<str>,
    channel: Arc<str>,
    url: Arc<str>,
}

impl Keys {
    fn new() -> Self {
        Keys {
            kind: "type".into(),
            id: "id".into(),
            name: "name".into(),
            email: "emailAddress".into(),
            credit_card: "creditCard".into(),
            city: "city".into(),
            state: "state".into(),
            date_time: "dateTime".into(),
            extra: "extra".into(),
            item_name: "itemName".into(),
            description: "description".into(),
            initial_bid: "initialBid".into(),
            reserve: "reserve".into(),
            expires: "expires".into(),
            seller: "seller".into(),
            category: "category".into(),
            auction: "auction".into(),
            bidder: "bidder".into(),
            price: "price".into(),
            channel: "channel".into(),
            url: "url".into(),
        }
    }
}

/// The Nexmark generator's configuration.
pub struct Nexmark {
    seed: u64,
    hot_auction_ratio: u64,
    hot_bidders_ratio: u64,
    hot_sellers_ratio: u64,
    num_active_people: u64,
    num_in_flight_auctions: u64,
    avg_person_bytes: usize,
    avg_auction_bytes: usize,
    avg_bid_bytes: usize,
    /// Event-time horizon of an auction's length, ms.
    auction_horizon_ms: u64,
    keys: Keys,
    types: [Value; 3],
    hot_channels: Vec<(Value, Value)>,
    /// The other channels' (name, url), built on first use (they are pure functions of `n`).
    channels: Vec<OnceLock<(Value, Value)>>,
}

impl Nexmark {
    pub(crate) fn from_options(
        seed: u64,
        timing: &Timing,
        options: &mut Options<'_>,
    ) -> Result<Self, GeneratorError> {
        let num_in_flight_auctions = options.uint_at_least("numInFlightAuctions", 100, 1)?;
        // As the reference: auctions end within about twice the event time it takes to
        // create `numInFlightAuctions` auctions.
        let events_for_auctions =
            num_in_flight_auctions * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let auction_horizon_ms =
            u64::try_from(u128::from(events_for_auctions) * u128::from(timing.interval_us) / 1000)
                .unwrap_or(u64::MAX / 4);
        Ok(Nexmark {
            seed,
            hot_auction_ratio: options.uint_at_least("hotAuctionRatio", 2, 1)?,
            hot_bidders_ratio: options.uint_at_least("hotBiddersRatio", 4, 1)?,
            hot_sellers_ratio: options.uint_at_least("hotSellersRatio", 4, 1)?,
            num_active_people: options.uint_at_least("numActivePeople", 1000, 1)?,
            num_in_flight_auctions,
            avg_person_bytes: size_option(options, "avgPersonByteSize", 200)?,
            avg_auction_bytes: size_option(options, "avgAuctionByteSize", 500)?,
            avg_bid_bytes: size_option(options, "avgBidByteSize", 100)?,
            auction_horizon_ms,
            keys: Keys::new(),
            types: [
                Value::str("person"),
                Value::str("auction"),
                Value::str("bid"),
            ],
            hot_channels: (0..HOT_CHANNELS.len())
                .map(|i| {
                    (
                        Value::str(HOT_CHANNELS[i]),
                        Value::str(&base_url(&mut Rng::new(0x4E58, i as u64))),
                    )
                })
                .collect(),
            channels: (0..CHANNELS_NUMBER).map(|_| OnceLock::new()).collect(),
        })
    }

    /// Event `index`: (event time ms, record).
    pub(crate) fn event(&self, index: u64, timing: &Timing) -> (i64, Value) {
        let ts = timing.index_time(index) - timing.jitter(index);
        let mut rng = Rng::new(self.seed, index);
        let record = match event_kind(index) {
            EventKind::Person => self.person(index, ts, &mut rng),
            EventKind::Auction => self.auction(index, ts, &mut rng),
            EventKind::Bid => self.bid(index, ts, &mut rng),
        };
        (ts, Value::Map(Arc::new(record)))
    }

    /// A person id among the active people, with a lead into people not created yet.
    fn next_base0_person_id(&self, index: u64, rng: &mut Rng) -> u64 {
        let num_people = last_base0_person_id(index) + 1;
        let active = num_people.min(self.num_active_people);
        let n = rng.below(active + PERSON_ID_LEAD);
        num_people - active + n
    }

    /// An auction id among the auctions in flight, with a lead into future ones.
    fn next_base0_auction_id(&self, index: u64, rng: &mut Rng) -> u64 {
        let max_auction = last_base0_auction_id(index);
        let min_auction = max_auction.saturating_sub(self.num_in_flight_auctions);
        min_auction + rng.below(max_auction - min_auction + 1 + AUCTION_ID_LEAD)
    }

    fn person(&self, index: u64, ts: i64, rng: &mut Rng) -> Map {
        let k = &self.keys;
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize],
            LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]
        );
        let email = format!("{}@{}.com", next_string(rng, 7), next_string(rng, 5));
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize];
        let size = 8 + name.len() + email.len() + credit_card.len() + city.len() + state.len();
        let extra = next_extra_value(rng, size, self.avg_person_bytes);
        Map {
            entries: vec![
                (k.kind.clone(), self.types[0].clone()),
                (
                    k.id.clone(),
                    id(last_base0_person_id(index), FIRST_PERSON_ID),
                ),
                (k.name.clone(), Value::str(&name)),
                (k.email.clone(), Value::str(&email)),
                (k.credit_card.clone(), Value::str(&credit_card)),
                (k.city.clone(), Value::str(city)),
                (k.state.clone(), Value::str(state)),
                (k.date_time.clone(), Value::Int(ts)),
                (k.extra.clone(), extra),
            ],
        }
    }

    fn auction(&self, index: u64, ts: i64, rng: &mut Rng) -> Map {
        let k = &self.keys;
        // P(hot seller) = 1 - 1/hotSellersRatio.
        let seller = if rng.below(self.hot_sellers_ratio) > 0 {
            (last_base0_person_id(index) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            self.next_base0_person_id(index, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let initial_bid = next_price(rng);
        let length_ms = 1 + rng.below((self.auction_horizon_ms * 2).max(1));
        let expires = ts.saturating_add(i64::try_from(length_ms).unwrap_or(i64::MAX));
        let item_name = next_string_value(rng, 20);
        let description = next_string_value(rng, 100);
        let reserve = initial_bid + next_price(rng);
        let size = 8 + str_len(&item_name) + str_len(&description) + 8 + 8 + 8 + 8 + 8;
        let extra = next_extra_value(rng, size, self.avg_auction_bytes);
        Map {
            entries: vec![
                (k.kind.clone(), self.types[1].clone()),
                (
                    k.id.clone(),
                    id(last_base0_auction_id(index), FIRST_AUCTION_ID),
                ),
                (k.item_name.clone(), item_name),
                (k.description.clone(), description),
                (k.initial_bid.clone(), Value::Int(initial_bid)),
                (k.reserve.clone(), Value::Int(reserve)),
                (k.date_time.clone(), Value::Int(ts)),
                (k.expires.clone(), Value::Int(expires)),
                (k.seller.clone(), id(seller, FIRST_PERSON_ID)),
                (k.category.clone(), Value::Int(category)),
                (k.extra.clone(), extra),
            ],
        }
    }

    fn bid(&self, index: u64, ts: i64, rng: &mut Rng) -> Map {
        let k = &self.keys;
        // P(hot auction) = 1 - 1/hotAuctionRatio.
        let auction = if rng.below(self.hot_auction_ratio) > 0 {
            (last_base0_auction_id(index) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            self.next_base0_auction_id(index, rng)
        };
        // P(hot bidder) = 1 - 1/hotBiddersRatio; hot bidders are the second person of a
        // batch, so they differ from hot sellers.
        let bidder = if rng.below(self.hot_bidders_ratio) > 0 {
            (last_base0_person_id(index) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            self.next_base0_person_id(index, rng)
        };
        let price = next_price(rng);
        let (channel, url) = if rng.below(HOT_CHANNELS_RATIO) > 0 {
            self.hot_channels[rng.below(HOT_CHANNELS.len() as u64) as usize].clone()
        } else {
            let n = rng.below(CHANNELS_NUMBER);
            self.channels[n as usize]
                .get_or_init(|| {
                    let url = format!(
                        "{}&channel_id={}",
                        base_url(&mut Rng::new(0x4E58_4348, n)),
                        (n as u32).reverse_bits()
                    );
                    (Value::str(&format!("channel-{n}")), Value::str(&url))
                })
                .clone()
        };
        let extra = next_extra_value(rng, 32, self.avg_bid_bytes);
        Map {
            entries: vec![
                (k.kind.clone(), self.types[2].clone()),
                (k.auction.clone(), id(auction, FIRST_AUCTION_ID)),
                (k.bidder.clone(), id(bidder, FIRST_PERSON_ID)),
                (k.price.clone(), Value::Int(price)),
                (k.channel.clone(), channel),
                (k.url.clone(), url),
                (k.date_time.clone(), Value::Int(ts)),
                (k.extra.clone(), extra),
            ],
        }
    }
}

fn size_option(
    options: &mut Options<'_>,
    name: &'static str,
    default: u64,
) -> Result<usize, GeneratorError> {
    let v = options.uint(name, default)?;
    usize::try_from(v.min(1 << 20)).map_err(|_| super::invalid(name, "too large"))
}

/// A price in cents, log-uniform between 1 and 1,000,000 dollars.
fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

/// A string of 3 to `max_len - 1` lowercase letters with occasional spaces, trimmed.
fn next_string(rng: &mut Rng, max_len: u64) -> String {
    let len = 3 + rng.below(max_len.saturating_sub(3).max(1));
    let s: String = (0..len)
        .map(|_| {
            if rng.below(13) == 0 {
                ' '
            } else {
                char::from(b'a' + rng.below(26) as u8)
            }
        })
        .collect();
    s.trim().to_string()
}

/// A string value of `len` ASCII bytes drawn by `byte`, trimmed of spaces at both ends when
/// `trim` (built in place: one allocation, the value's own).
fn ascii_value(len: usize, trim: bool, mut byte: impl FnMut() -> u8) -> Value {
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    for b in buf.iter_mut() {
        *b = byte();
    }
    let mut text: &[u8] = buf;
    if trim {
        while let [b' ', rest @ ..] = text {
            text = rest;
        }
        while let [rest @ .., b' '] = text {
            text = rest;
        }
    }
    Value::Str(Arc::from(std::str::from_utf8(text).unwrap_or_default()))
}

/// The length of a string value (0 for other values).
fn str_len(v: &Value) -> usize {
    v.as_str().map_or(0, str::len)
}

/// [`next_string`] as a value: the same draws, the same text.
fn next_string_value(rng: &mut Rng, max_len: u64) -> Value {
    let len = 3 + rng.below(max_len.saturating_sub(3).max(1));
    ascii_value(len as usize, true, || {
        if rng.below(13) == 0 {
            b' '
        } else {
            b'a' + rng.below(26) as u8
        }
    })
}

/// Padding that brings a record of `current` bytes to about `average` bytes (±20%): exactly
/// that many lowercase letters (uniform, thirteen per random draw).
fn next_extra_value(rng: &mut Rng, current: usize, average: usize) -> Value {
    if current > average {
        return Value::str("");
    }
    let wanted = average - current;
    let delta = (wanted as f64 * 0.2).round() as usize;
    let min = wanted - delta;
    let len = if delta == 0 {
        min
    } else {
        min + rng.below(2 * delta as u64) as usize
    };
    // 13 letters from each 64 random bits (multiply-and-carry extraction: each step takes the
    // integer part of x * 26 as the letter and keeps the fraction), a tenth of the draws
    let mut x = 0u64;
    let mut left = 0;
    ascii_value(len, false, || {
        if left == 0 {
            x = rng.next_u64();
            left = 13;
        }
        left -= 1;
        let m = u128::from(x) * 26;
        x = m as u64;
        b'a' + (m >> 64) as u8
    })
}

/// A channel's base URL.
fn base_url(rng: &mut Rng) -> String {
    let mut part = || next_string(rng, 5).replace(' ', "_");
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        part(),
        part(),
        part()
    )
}
