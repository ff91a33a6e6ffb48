//! A team's business hours: when it counts as "open", and how much open time
//! lies between two instants.
//!
//! Configuration is a time zone, a weekly schedule of local-time ranges and a
//! list of local holiday dates. Callers only ever see UTC [`Millis`]; local
//! time is an internal detail, so every answer is in real elapsed time even
//! across daylight-saving changes.
//!
//! Invariants and rules:
//! - Every query is derived from one primitive, `open_intervals`, which
//!   yields the sorted, merged, half-open `[start, end)` open intervals (UTC)
//!   inside a window. Deriving everything from it keeps `is_open`,
//!   `next_change`, `business_ms_between` and friends mutually consistent.
//! - A range belongs to the local date on which it *starts*. An overnight
//!   range ("22:00-06:00") runs into the next date, and a holiday only cancels
//!   ranges starting on it, so a shift that began the evening before a
//!   holiday still finishes.
//! - Local times that do not exist (spring-forward gap) resolve to the instant
//!   the gap ends; ambiguous local times (fall-back) resolve to the earliest
//!   instant. A range can therefore last longer or shorter than its nominal
//!   length, or vanish entirely if it lies wholly inside a gap.
//! - No `hours` table means open around the clock (minus holidays). A table
//!   that is present but has no ranges means never open; that is what
//!   "a missing day is closed" implies for all seven days.
//! - Every function terminates quickly for any input: searches look at most
//!   [`HORIZON_MS`] forward or backward, spans for `business_ms_between` and
//!   `add_business_ms` are capped at [`MAX_SPAN_MS`], and instants are clamped
//!   into years 0..10000 so date arithmetic can never overflow.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone,
};
use chrono_tz::Tz;

use super::Millis;

const DAY_MS: Millis = 86_400_000;
const MINUTES_PER_DAY: u32 = 24 * 60;

/// How far `next_open`, `next_change` and `closed_since` look. Long enough to
/// see past any realistic closure (a year plus slack), short enough to bound
/// the work for a schedule that never opens.
pub const HORIZON_MS: Millis = 400 * DAY_MS;

/// Longest span `business_ms_between` measures and `add_business_ms` searches
/// (about ten years); longer spans are truncated. Nothing in a messaging
/// broker needs more, and it caps the per-day iteration.
pub const MAX_SPAN_MS: Millis = 3_653 * DAY_MS;

/// Scans proceed in windows of this size so that a nearby answer is found
/// without materialising the whole horizon.
const CHUNK_MS: Millis = 14 * DAY_MS;

/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z. Inputs are clamped into
/// this range; chrono supports far more, so the horizon and span arithmetic
/// on top of a clamped instant stays representable.
const MIN_MS: Millis = -62_167_219_200_000;
const MAX_MS: Millis = 253_402_300_800_000;

const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct HoursError {
    /// Config key relative to the business-hours table, e.g. `"hours.mon[1]"`.
    pub key: String,
    pub problem: String,
}

impl HoursError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Ranges of one weekday as minutes after local midnight of the day they
/// start on; `end` may exceed 1440 for ranges that cross midnight. Sorted and
/// merged.
type DayRanges = Vec<(u32, u32)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    tz: Tz,
    /// Indexed Monday = 0. `None` means open around the clock.
    week: Option<[DayRanges; 7]>,
    holidays: BTreeSet<NaiveDate>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self::always_open()
    }
}

impl BusinessHours {
    pub fn always_open() -> Self {
        Self {
            tz: Tz::UTC,
            week: None,
            holidays: BTreeSet::new(),
        }
    }

    /// time_zone None means UTC. hours None means always open (except holidays).
    pub fn parse(
        time_zone: Option<&str>,
        hours: Option<&BTreeMap<String, Vec<String>>>,
        holidays: &[String],
    ) -> Result<Self, HoursError> {
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                HoursError::new(
                    "time_zone",
                    format!("unknown time zone {name:?}; expected an IANA name such as \"Europe/Berlin\""),
                )
            })?,
        };

        let week = match hours {
            None => None,
            Some(table) => {
                let mut week: [DayRanges; 7] = Default::default();
                for (day_key, ranges) in table {
                    let slot = DAY_KEYS
                        .iter()
                        .position(|k| k == day_key)
                        .and_then(|i| week.get_mut(i))
                        .ok_or_else(|| {
                            HoursError::new(
                                format!("hours.{day_key}"),
                                "unknown day; expected one of mon, tue, wed, thu, fri, sat, sun",
                            )
                        })?;
                    for (i, text) in ranges.iter().enumerate() {
                        let range = parse_range(text).map_err(|problem| {
                            HoursError::new(format!("hours.{day_key}[{i}]"), problem)
                        })?;
                        slot.push(range);
                    }
                }
                for day in &mut week {
                    merge_minutes(day);
                }
                Some(week)
            }
        };

        let mut dates = BTreeSet::new();
        for (i, text) in holidays.iter().enumerate() {
            let date = parse_date(text)
                .map_err(|problem| HoursError::new(format!("holidays[{i}]"), problem))?;
            dates.insert(date);
        }

        Ok(Self {
            tz,
            week,
            holidays: dates,
        })
    }

    /// No hours and no holidays.
    /// The time zone its hours are read in (reports cut their hour and day buckets in it).
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn is_always_open(&self) -> bool {
        self.week.is_none() && self.holidays.is_empty()
    }

    pub fn is_open(&self, at: Millis) -> bool {
        let at = clamp(at);
        !self.open_intervals(at, at + 1).is_empty()
    }

    /// When closed at `at`: the instant the current closed period began (the
    /// end of the last open interval before `at`, or None if there was none
    /// within the search horizon); None when open at `at`.
    pub fn closed_since(&self, at: Millis) -> Option<Millis> {
        let at = clamp(at);
        if self.is_open(at) {
            return None;
        }
        // Clipping at a chunk's upper edge cannot fake an end: had the
        // interval continued, the later chunk (already scanned, empty) would
        // have contained it.
        chunks_backward(at.saturating_sub(HORIZON_MS), at)
            .find_map(|(a, b)| self.open_intervals(a, b).last().map(|&(_, end)| end))
    }

    /// The next instant >= at at which it is open (== at if open now); None
    /// if it never opens within the horizon.
    pub fn next_open(&self, at: Millis) -> Option<Millis> {
        let at = clamp(at);
        chunks_forward(at, at.saturating_add(HORIZON_MS))
            .find_map(|(a, b)| self.open_intervals(a, b).first().map(|&(start, _)| start))
    }

    /// The next instant > at at which open/closed changes; None if it never
    /// changes within the horizon (always open).
    pub fn next_change(&self, at: Millis) -> Option<Millis> {
        let at = clamp(at);
        if !self.is_open(at) {
            return self.next_open(at);
        }
        for (a, b) in chunks_forward(at, at.saturating_add(HORIZON_MS)) {
            match self.open_intervals(a, b).first() {
                // Still inside the open period that contains `at`.
                Some(&(start, end)) if start == a => {
                    if end < b {
                        return Some(end);
                    }
                }
                // The open period ended exactly on the previous chunk's edge.
                _ => return Some(a),
            }
        }
        None
    }

    /// Milliseconds of open time in [from, to); 0 if to <= from.
    pub fn business_ms_between(&self, from: Millis, to: Millis) -> Millis {
        if to <= from {
            return 0;
        }
        let from = clamp(from);
        let to = clamp(to).min(from.saturating_add(MAX_SPAN_MS));
        chunks_forward(from, to)
            .flat_map(|(a, b)| self.open_intervals(a, b))
            .map(|(start, end)| end - start)
            .sum()
    }

    /// The earliest instant t >= from such that
    /// business_ms_between(from, t) == ms (ms >= 0); None if not reached
    /// within the horizon.
    ///
    /// A negative `ms` is treated as 0. The search horizon is [`MAX_SPAN_MS`]
    /// so that anything `business_ms_between` can measure can be added back.
    pub fn add_business_ms(&self, from: Millis, ms: Millis) -> Option<Millis> {
        if ms <= 0 {
            return Some(from);
        }
        let from = clamp(from);
        let mut remaining = ms;
        for (a, b) in chunks_forward(from, from.saturating_add(MAX_SPAN_MS)) {
            for (start, end) in self.open_intervals(a, b) {
                // `>=` so that landing exactly on an interval's end answers
                // that end, not the start of the next open period.
                if end - start >= remaining {
                    return Some(start + remaining);
                }
                remaining -= end - start;
            }
        }
        None
    }

    /// Sorted, merged open intervals clipped to `[from, to)`. Exact inside the
    /// window; an interval touching an edge may continue beyond it.
    fn open_intervals(&self, from: Millis, to: Millis) -> Vec<(Millis, Millis)> {
        if to <= from {
            return Vec::new();
        }
        if self.is_always_open() {
            return vec![(from, to)];
        }
        let (Some(first), Some(last)) = (self.local_date(from), self.local_date(to)) else {
            return Vec::new();
        };
        // A range starting the day before `from` can run into it (overnight);
        // one extra day each side absorbs zones whose offset moved by a whole
        // day (e.g. Pacific/Apia skipping 2011-12-30).
        let first = first.checked_sub_days(Days::new(2)).unwrap_or(first);
        let last = last.checked_add_days(Days::new(1)).unwrap_or(last);

        let mut found = Vec::new();
        let mut push = |start: Option<Millis>, end: Option<Millis>| {
            if let (Some(start), Some(end)) = (start, end) {
                let (start, end) = (start.max(from), end.min(to));
                if end > start {
                    found.push((start, end));
                }
            }
        };
        let mut day = first;
        while day <= last {
            if !self.holidays.contains(&day) {
                match &self.week {
                    None => push(self.resolve(day, 0), self.resolve(day, MINUTES_PER_DAY)),
                    Some(week) => {
                        let weekday = day.weekday().num_days_from_monday() as usize;
                        for &(start, end) in week.get(weekday).into_iter().flatten() {
                            push(self.resolve(day, start), self.resolve(day, end));
                        }
                    }
                }
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }

        found.sort_unstable();
        let mut merged: Vec<(Millis, Millis)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match merged.last_mut() {
                Some(prev) if start <= prev.1 => prev.1 = prev.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    fn local_date(&self, at: Millis) -> Option<NaiveDate> {
        DateTime::from_timestamp_millis(at).map(|utc| utc.with_timezone(&self.tz).date_naive())
    }

    /// The instant of `minute` minutes after local midnight of `day`
    /// (`minute` may exceed a day, for overnight range ends).
    fn resolve(&self, day: NaiveDate, minute: u32) -> Option<Millis> {
        let date = day.checked_add_days(Days::new(u64::from(minute / MINUTES_PER_DAY)))?;
        let minute = minute % MINUTES_PER_DAY;
        let local = date.and_hms_opt(minute / 60, minute % 60, 0)?;
        self.earliest(local).or_else(|| self.gap_end(local))
    }

    fn earliest(&self, local: NaiveDateTime) -> Option<Millis> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.timestamp_millis()),
            LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
            LocalResult::None => None,
        }
    }

    /// For a local time inside a gap: the instant the gap ends, i.e. the
    /// earliest instant of the first valid local time after it. Found by
    /// galloping then bisecting to the second, because transitions are not
    /// always on whole minutes (historic local mean time offsets).
    fn gap_end(&self, local: NaiveDateTime) -> Option<Millis> {
        let valid =
            |t: NaiveDateTime| !matches!(self.tz.from_local_datetime(&t), LocalResult::None);
        let mut invalid = local;
        let mut step = TimeDelta::minutes(1);
        let mut valid_at = loop {
            let candidate = local.checked_add_signed(step)?;
            if valid(candidate) {
                break candidate;
            }
            invalid = candidate;
            // No real gap is this long; give up rather than loop.
            if step > TimeDelta::days(4) {
                return None;
            }
            step = step.checked_add(&step)?;
        };
        loop {
            let gap = valid_at.signed_duration_since(invalid).num_seconds();
            if gap <= 1 {
                break;
            }
            let mid = invalid.checked_add_signed(TimeDelta::seconds(gap / 2))?;
            if valid(mid) {
                valid_at = mid;
            } else {
                invalid = mid;
            }
        }
        self.earliest(valid_at)
    }
}

fn clamp(at: Millis) -> Millis {
    at.clamp(MIN_MS, MAX_MS)
}

/// Consecutive windows covering `[from, to)` in increasing order.
fn chunks_forward(from: Millis, to: Millis) -> impl Iterator<Item = (Millis, Millis)> {
    let mut a = from;
    std::iter::from_fn(move || {
        if a >= to {
            return None;
        }
        let b = a.saturating_add(CHUNK_MS).min(to);
        let window = (a, b);
        a = b;
        Some(window)
    })
}

/// Consecutive windows covering `[from, to)` in decreasing order.
fn chunks_backward(from: Millis, to: Millis) -> impl Iterator<Item = (Millis, Millis)> {
    let mut b = to;
    std::iter::from_fn(move || {
        if b <= from {
            return None;
        }
        let a = b.saturating_sub(CHUNK_MS).max(from);
        let window = (a, b);
        b = a;
        Some(window)
    })
}

fn merge_minutes(ranges: &mut DayRanges) {
    ranges.sort_unstable();
    let mut merged: DayRanges = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match merged.last_mut() {
            Some(prev) if start <= prev.1 => prev.1 = prev.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *ranges = merged;
}

/// "HH:MM-HH:MM" → (start, end) in minutes after midnight of the start day,
/// with `end > start`; an end earlier than the start means the next day.
fn parse_range(text: &str) -> Result<(u32, u32), String> {
    let expected =
        || format!("expected \"HH:MM-HH:MM\" (24-hour, e.g. \"09:00-17:00\"), got {text:?}");
    let (start, end) = text.split_once('-').ok_or_else(expected)?;
    let start = parse_clock(start.trim(), false).ok_or_else(expected)??;
    let end = parse_clock(end.trim(), true).ok_or_else(expected)??;
    if start == end {
        return Err(format!(
            "start equals end in {text:?}; use \"00:00-24:00\" for a whole day"
        ));
    }
    if end > start {
        Ok((start, end))
    } else {
        Ok((start, end + MINUTES_PER_DAY))
    }
}

/// Outer `None`: not shaped like "HH:MM". Inner `Err`: shaped right but out of
/// range, which deserves a more specific message.
fn parse_clock(text: &str, is_end: bool) -> Option<Result<u32, String>> {
    let &[h1, h2, b':', m1, m2] = text.as_bytes() else {
        return None;
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hour = u32::from(h1 - b'0') * 10 + u32::from(h2 - b'0');
    let minute = u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0');
    Some(if minute > 59 {
        Err(format!("invalid time {text:?}: minutes must be 00-59"))
    } else if is_end && hour == 24 && minute == 0 {
        Ok(MINUTES_PER_DAY)
    } else if hour > 23 {
        Err(if is_end {
            format!("invalid end time {text:?}: hours must be 00-23, or exactly 24:00")
        } else {
            format!("invalid start time {text:?}: hours must be 00-23")
        })
    } else {
        Ok(hour * 60 + minute)
    })
}

/// Strict "YYYY-MM-DD"; chrono's own parser accepts unpadded fields, which
/// would let typos like "2026-1-5" through.
fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let expected = || format!("expected a date \"YYYY-MM-DD\", got {text:?}");
    let &[y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = text.as_bytes() else {
        return Err(expected());
    };
    let digits = [y1, y2, y3, y4, m1, m2, d1, d2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(expected());
    }
    let num = |ds: &[u8]| {
        ds.iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let year = num(&[y1, y2, y3, y4]);
    let month = num(&[m1, m2]);
    let day = num(&[d1, d2]);
    // Four digits always fit in i32.
    let year = i32::try_from(year).map_err(|_| expected())?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| format!("no such date {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use chrono_tz::Europe::Berlin;

    const MIN: Millis = 60_000;
    const HOUR: Millis = 60 * MIN;

    /// Berlin local wall time → instant (earliest if ambiguous).
    fn b(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    fn table(days: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        days.iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn berlin(days: &[(&str, &[&str])], holidays: &[&str]) -> BusinessHours {
        BusinessHours::parse(
            Some("Europe/Berlin"),
            Some(&table(days)),
            &strings(holidays),
        )
        .unwrap()
    }

    fn weekdays_9_17(holidays: &[&str]) -> BusinessHours {
        let r: &[&str] = &["09:00-17:00"];
        berlin(
            &[("mon", r), ("tue", r), ("wed", r), ("thu", r), ("fri", r)],
            holidays,
        )
    }

    fn err(tz: Option<&str>, days: &[(&str, &[&str])], holidays: &[&str]) -> HoursError {
        BusinessHours::parse(tz, Some(&table(days)), &strings(holidays)).unwrap_err()
    }

    #[test]
    fn clamp_bounds_are_what_they_claim() {
        assert_eq!(MIN_MS, utc(0, 1, 1, 0, 0));
        assert_eq!(MAX_MS, utc(10000, 1, 1, 0, 0));
    }

    #[test]
    fn plain_range_boundaries() {
        // 2026-01-05 is a Monday.
        let h = berlin(&[("mon", &["09:00-17:00"])], &[]);
        assert!(!h.is_open(b(2026, 1, 5, 9, 0) - 1));
        assert!(h.is_open(b(2026, 1, 5, 9, 0)));
        assert!(h.is_open(b(2026, 1, 5, 17, 0) - 1));
        assert!(!h.is_open(b(2026, 1, 5, 17, 0)));
        assert!(!h.is_open(b(2026, 1, 6, 10, 0)));
        assert!(!h.is_always_open());
    }

    #[test]
    fn default_zone_is_utc() {
        let h =
            BusinessHours::parse(None, Some(&table(&[("mon", &["09:00-17:00"])])), &[]).unwrap();
        assert!(h.is_open(utc(2026, 1, 5, 9, 0)));
        assert!(!h.is_open(utc(2026, 1, 5, 9, 0) - 1));
    }

    #[test]
    fn two_ranges_a_day() {
        // 2026-01-06 is a Tuesday.
        let h = berlin(&[("tue", &["09:00-12:00", "13:00-17:00"])], &[]);
        assert!(h.is_open(b(2026, 1, 6, 11, 59)));
        assert!(!h.is_open(b(2026, 1, 6, 12, 0)));
        assert!(!h.is_open(b(2026, 1, 6, 12, 30)));
        assert!(h.is_open(b(2026, 1, 6, 13, 0)));
        assert_eq!(
            h.next_change(b(2026, 1, 6, 10, 0)),
            Some(b(2026, 1, 6, 12, 0))
        );
        assert_eq!(
            h.next_change(b(2026, 1, 6, 12, 0)),
            Some(b(2026, 1, 6, 13, 0))
        );
        assert_eq!(
            h.closed_since(b(2026, 1, 6, 12, 30)),
            Some(b(2026, 1, 6, 12, 0))
        );
        assert_eq!(
            h.business_ms_between(b(2026, 1, 6, 0, 0), b(2026, 1, 7, 0, 0)),
            7 * HOUR
        );
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        // Mon 20:00-24:00 and Tue 00:00-02:00 form one period; so do the
        // overlapping Wednesday ranges.
        let h = berlin(
            &[
                ("mon", &["20:00-24:00"]),
                ("tue", &["00:00-02:00"]),
                ("wed", &["09:00-12:00", "11:00-13:00"]),
            ],
            &[],
        );
        assert_eq!(
            h.next_change(b(2026, 1, 5, 21, 0)),
            Some(b(2026, 1, 6, 2, 0))
        );
        assert_eq!(
            h.next_change(b(2026, 1, 7, 9, 30)),
            Some(b(2026, 1, 7, 13, 0))
        );
        assert_eq!(
            h.business_ms_between(b(2026, 1, 7, 0, 0), b(2026, 1, 8, 0, 0)),
            4 * HOUR
        );
    }

    #[test]
    fn overnight_range() {
        // 2026-01-10 is a Saturday.
        let h = berlin(&[("sat", &["22:00-06:00"])], &[]);
        assert!(!h.is_open(b(2026, 1, 10, 21, 59)));
        assert!(h.is_open(b(2026, 1, 10, 22, 0)));
        assert!(h.is_open(b(2026, 1, 11, 3, 0)));
        assert!(!h.is_open(b(2026, 1, 11, 6, 0)));
        assert!(!h.is_open(b(2026, 1, 11, 7, 0)));
        assert!(!h.is_open(b(2026, 1, 11, 22, 0)));
        assert_eq!(
            h.next_change(b(2026, 1, 11, 3, 0)),
            Some(b(2026, 1, 11, 6, 0))
        );
        assert_eq!(
            h.business_ms_between(b(2026, 1, 10, 0, 0), b(2026, 1, 12, 0, 0)),
            8 * HOUR
        );
    }

    #[test]
    fn holiday_closes_ranges_starting_on_it() {
        // 2026-12-25 is a Friday.
        let h = weekdays_9_17(&["2026-12-25"]);
        assert!(h.is_open(b(2026, 12, 24, 10, 0)));
        assert!(!h.is_open(b(2026, 12, 25, 10, 0)));
        assert_eq!(
            h.next_open(b(2026, 12, 24, 18, 0)),
            Some(b(2026, 12, 28, 9, 0))
        );

        // The Thursday night shift runs into the holiday morning; the
        // Friday night shift starts on the holiday and is cancelled.
        let night: &[&str] = &["22:00-06:00"];
        let h = berlin(&[("thu", night), ("fri", night)], &["2026-12-25"]);
        assert!(h.is_open(b(2026, 12, 24, 23, 0)));
        assert!(h.is_open(b(2026, 12, 25, 5, 0)));
        assert!(!h.is_open(b(2026, 12, 25, 6, 0)));
        assert!(!h.is_open(b(2026, 12, 25, 23, 0)));
        assert!(!h.is_open(b(2026, 12, 26, 3, 0)));
        // Without the holiday, Friday night is open.
        let h = berlin(&[("thu", night), ("fri", night)], &[]);
        assert!(h.is_open(b(2026, 12, 25, 23, 0)));
    }

    #[test]
    fn always_open() {
        for h in [
            BusinessHours::always_open(),
            BusinessHours::parse(None, None, &[]).unwrap(),
            BusinessHours::parse(Some("Europe/Berlin"), None, &[]).unwrap(),
        ] {
            assert!(h.is_always_open());
            let t = b(2026, 3, 29, 1, 0);
            assert!(h.is_open(t));
            assert_eq!(h.next_open(t), Some(t));
            assert_eq!(h.next_change(t), None);
            assert_eq!(h.closed_since(t), None);
            assert_eq!(h.business_ms_between(t, t + 5 * HOUR), 5 * HOUR);
            assert_eq!(h.add_business_ms(t, 5 * HOUR), Some(t + 5 * HOUR));
        }
    }

    #[test]
    fn no_hours_with_holidays() {
        let h =
            BusinessHours::parse(Some("Europe/Berlin"), None, &strings(&["2026-12-25"])).unwrap();
        assert!(!h.is_always_open());
        assert!(h.is_open(b(2026, 12, 25, 0, 0) - 1));
        assert!(!h.is_open(b(2026, 12, 25, 0, 0)));
        assert!(!h.is_open(b(2026, 12, 25, 23, 59)));
        assert!(h.is_open(b(2026, 12, 26, 0, 0)));
        assert_eq!(
            h.closed_since(b(2026, 12, 25, 12, 0)),
            Some(b(2026, 12, 25, 0, 0))
        );
        assert_eq!(
            h.next_open(b(2026, 12, 25, 12, 0)),
            Some(b(2026, 12, 26, 0, 0))
        );
        assert_eq!(
            h.next_change(b(2026, 6, 1, 12, 0)),
            Some(b(2026, 12, 25, 0, 0))
        );
        assert_eq!(h.next_change(b(2026, 12, 26, 0, 0)), None);
        assert_eq!(
            h.business_ms_between(b(2026, 12, 24, 0, 0), b(2026, 12, 27, 0, 0)),
            48 * HOUR
        );
    }

    #[test]
    fn never_open() {
        let h = BusinessHours::parse(Some("Europe/Berlin"), Some(&BTreeMap::new()), &[]).unwrap();
        let t = b(2026, 1, 5, 12, 0);
        assert!(!h.is_always_open());
        assert!(!h.is_open(t));
        assert_eq!(h.next_open(t), None);
        assert_eq!(h.next_change(t), None);
        assert_eq!(h.closed_since(t), None);
        assert_eq!(h.business_ms_between(t, t + 30 * DAY_MS), 0);
        assert_eq!(h.add_business_ms(t, 1), None);
        assert_eq!(h.add_business_ms(t, 0), Some(t));
    }

    #[test]
    fn dst_spring_forward() {
        // Berlin 2026-03-29 (a Sunday): 02:00 CET jumps to 03:00 CEST.
        let h = berlin(&[("sun", &["01:00-04:00"])], &[]);
        let day = (b(2026, 3, 28, 0, 0), b(2026, 3, 30, 0, 0));
        assert_eq!(h.business_ms_between(day.0, day.1), 2 * HOUR);
        assert_eq!(h.next_open(day.0), Some(utc(2026, 3, 29, 0, 0)));
        assert_eq!(
            h.next_change(b(2026, 3, 29, 1, 30)),
            Some(utc(2026, 3, 29, 2, 0))
        );

        // A range starting inside the gap starts when the gap ends.
        let h = berlin(&[("sun", &["02:30-05:00"])], &[]);
        assert_eq!(h.next_open(day.0), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(h.business_ms_between(day.0, day.1), 2 * HOUR);

        // A range wholly inside the gap vanishes.
        let h = berlin(&[("sun", &["02:15-02:45"])], &[]);
        assert_eq!(h.business_ms_between(day.0, day.1), 0);
    }

    #[test]
    fn dst_fall_back() {
        // Berlin 2026-10-25 (a Sunday): 03:00 CEST falls back to 02:00 CET.
        let h = berlin(&[("sun", &["01:00-04:00"])], &[]);
        let day = (b(2026, 10, 24, 0, 0), b(2026, 10, 26, 0, 0));
        assert_eq!(h.business_ms_between(day.0, day.1), 4 * HOUR);
        assert_eq!(h.next_open(day.0), Some(utc(2026, 10, 24, 23, 0)));
        assert_eq!(
            h.next_change(day.0 + DAY_MS + 2 * HOUR),
            Some(utc(2026, 10, 25, 3, 0))
        );

        // An ambiguous start takes the earlier (CEST) instant.
        let h = berlin(&[("sun", &["02:30-04:00"])], &[]);
        assert_eq!(h.next_open(day.0), Some(utc(2026, 10, 25, 0, 30)));
        assert_eq!(h.business_ms_between(day.0, day.1), 2 * HOUR + 30 * MIN);
    }

    #[test]
    fn business_time_across_weekend() {
        // Fri 2026-01-09 16:00 → Mon 2026-01-12 10:00.
        let h = weekdays_9_17(&[]);
        assert_eq!(
            h.business_ms_between(b(2026, 1, 9, 16, 0), b(2026, 1, 12, 10, 0)),
            2 * HOUR
        );
        assert_eq!(
            h.business_ms_between(b(2026, 1, 12, 10, 0), b(2026, 1, 9, 16, 0)),
            0
        );
        assert_eq!(h.business_ms_between(i64::MIN, i64::MIN + 1), 0);
    }

    #[test]
    fn add_business_time_skips_weekend() {
        let h = weekdays_9_17(&[]);
        let fri = b(2026, 1, 9, 16, 58);
        assert_eq!(h.add_business_ms(fri, 5 * MIN), Some(b(2026, 1, 12, 9, 3)));
        // Landing exactly on closing time answers closing time.
        assert_eq!(h.add_business_ms(fri, 2 * MIN), Some(b(2026, 1, 9, 17, 0)));
        assert_eq!(h.add_business_ms(fri, 0), Some(fri));
        assert_eq!(h.add_business_ms(fri, -5), Some(fri));
        // From a closed instant, time starts counting at the next opening.
        assert_eq!(
            h.add_business_ms(b(2026, 1, 10, 12, 0), 1),
            Some(b(2026, 1, 12, 9, 0) + 1)
        );
    }

    #[test]
    fn next_open_next_change_closed_since() {
        let h = weekdays_9_17(&[]);
        let sat = b(2026, 1, 10, 12, 0);
        assert_eq!(h.next_open(sat), Some(b(2026, 1, 12, 9, 0)));
        assert_eq!(h.next_change(sat), Some(b(2026, 1, 12, 9, 0)));
        assert_eq!(h.closed_since(sat), Some(b(2026, 1, 9, 17, 0)));

        let mon = b(2026, 1, 12, 10, 0);
        assert_eq!(h.next_open(mon), Some(mon));
        assert_eq!(h.next_change(mon), Some(b(2026, 1, 12, 17, 0)));
        assert_eq!(h.closed_since(mon), None);

        // At the very instant of closing, the closed period began now.
        let close = b(2026, 1, 9, 17, 0);
        assert_eq!(h.closed_since(close), Some(close));
        assert_eq!(h.next_change(close - 1), Some(close));
        assert_eq!(h.next_change(close), Some(b(2026, 1, 12, 9, 0)));
    }

    #[test]
    fn queries_agree_with_each_other() {
        let night: &[&str] = &["22:00-06:00"];
        let schedules = [
            weekdays_9_17(&["2026-03-27"]),
            berlin(
                &[
                    ("fri", night),
                    ("sat", night),
                    ("sun", &["01:00-04:00", "10:00-10:30"]),
                ],
                &["2026-03-28"],
            ),
            BusinessHours::parse(Some("Europe/Berlin"), None, &strings(&["2026-03-29"])).unwrap(),
        ];
        for h in &schedules {
            let mut t = b(2026, 3, 20, 0, 7);
            while t < b(2026, 4, 6, 0, 0) {
                let open = h.is_open(t);
                if let Some(c) = h.next_change(t) {
                    assert!(c > t);
                    assert_eq!(h.is_open(c - 1), open);
                    assert_ne!(h.is_open(c), open);
                    let expected = if open { c - t } else { 0 };
                    assert_eq!(h.business_ms_between(t, c), expected);
                }
                if let (false, Some(s)) = (open, h.closed_since(t)) {
                    assert!(s <= t);
                    assert!(h.is_open(s - 1));
                    assert!(!h.is_open(s));
                    assert_eq!(h.business_ms_between(s, t), 0);
                }
                let target = 3 * HOUR + 17 * MIN;
                if let Some(end) = h.add_business_ms(t, target) {
                    assert_eq!(h.business_ms_between(t, end), target);
                    assert_eq!(h.business_ms_between(t, end - 1), target - 1);
                }
                t += 37 * MIN;
            }
        }
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let schedules = [
            BusinessHours::always_open(),
            weekdays_9_17(&["2026-12-25"]),
            berlin(&[("sat", &["22:00-06:00"])], &[]),
            BusinessHours::parse(Some("Pacific/Apia"), None, &strings(&["2011-12-31"])).unwrap(),
        ];
        let points = [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            MAX_MS,
            i64::MAX - 1,
            i64::MAX,
        ];
        for h in &schedules {
            for &p in &points {
                let _ = h.is_open(p);
                let _ = h.closed_since(p);
                let _ = h.next_open(p);
                let _ = h.next_change(p);
                let _ = h.add_business_ms(p, i64::MAX);
                let _ = h.add_business_ms(p, HOUR);
                for &q in &points {
                    let ms = h.business_ms_between(p, q);
                    assert!((0..=MAX_SPAN_MS).contains(&ms));
                }
            }
        }
        assert_eq!(
            BusinessHours::always_open().business_ms_between(i64::MIN, i64::MAX),
            MAX_SPAN_MS
        );
    }

    #[test]
    fn gap_of_a_whole_day() {
        // Samoa skipped 2011-12-30 entirely; a range on that date starts when
        // the skipped day ends.
        let h = BusinessHours::parse(
            Some("Pacific/Apia"),
            Some(&table(&[("fri", &["09:00-17:00"])])),
            &[],
        )
        .unwrap();
        let apia: Tz = "Pacific/Apia".parse().unwrap();
        let start = apia
            .with_ymd_and_hms(2011, 12, 29, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let end = apia
            .with_ymd_and_hms(2012, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(h.business_ms_between(start, end), 0);
    }

    #[test]
    fn error_keys() {
        let ok: &[(&str, &[&str])] = &[("mon", &["09:00-17:00"])];

        let e = err(Some("Mars/Olympus_Mons"), ok, &[]);
        assert_eq!(e.key, "time_zone");
        assert!(e.to_string().starts_with("time_zone: "));

        assert_eq!(
            err(None, &[("monday", &["09:00-17:00"])], &[]).key,
            "hours.monday"
        );
        assert_eq!(
            err(None, &[("Mon", &["09:00-17:00"])], &[]).key,
            "hours.Mon"
        );
        assert_eq!(err(None, &[("mon", &["9-17"])], &[]).key, "hours.mon[0]");
        assert_eq!(
            err(None, &[("mon", &["9:00-17:00"])], &[]).key,
            "hours.mon[0]"
        );
        assert_eq!(err(None, &[("mon", &["09:00"])], &[]).key, "hours.mon[0]");
        assert_eq!(
            err(None, &[("tue", &["09:00-12:00", "25:00-26:00"])], &[]).key,
            "hours.tue[1]"
        );
        assert_eq!(
            err(None, &[("mon", &["10:00-10:00"])], &[]).key,
            "hours.mon[0]"
        );
        assert_eq!(
            err(None, &[("mon", &["24:00-02:00"])], &[]).key,
            "hours.mon[0]"
        );
        assert_eq!(
            err(None, &[("mon", &["09:00-24:30"])], &[]).key,
            "hours.mon[0]"
        );
        assert_eq!(
            err(None, &[("mon", &["09:60-17:00"])], &[]).key,
            "hours.mon[0]"
        );
        assert_eq!(
            err(None, &[("mon", &["00:00-00:00"])], &[]).key,
            "hours.mon[0]"
        );

        let e = err(None, ok, &["2026-12-25", "2026-02-30"]);
        assert_eq!(e.key, "holidays[1]");
        assert_eq!(err(None, ok, &["26-12-25"]).key, "holidays[0]");
        assert_eq!(err(None, ok, &["2026-1-05"]).key, "holidays[0]");
        assert_eq!(err(None, ok, &["Christmas"]).key, "holidays[0]");

        // Accepted edge forms.
        assert!(BusinessHours::parse(
            None,
            Some(&table(&[("sun", &["00:00-24:00", " 22:00 - 06:00 "])])),
            &[]
        )
        .is_ok());
    }
}
