//! Schedules: cron expressions (Unix five-field and the AWS six-field form with `?` and a
//! year, bare or as `cron(…)`) and `rate(…)`, in UTC or a named time zone.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use crate::error::{Error, Result};

/// When a job runs.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use etl_core::workflow::Schedule;
///
/// // AWS form: 02:00 UTC every day.
/// let daily: Schedule = "cron(0 2 * * ? *)".parse().unwrap();
/// let t = Utc.with_ymd_and_hms(2025, 7, 24, 2, 0, 0).unwrap();
/// assert_eq!(daily.next_after(t), Some(Utc.with_ymd_and_hms(2025, 7, 25, 2, 0, 0).unwrap()));
///
/// // Every 6 hours after the previous run.
/// let rate: Schedule = "rate(6 hours)".parse().unwrap();
/// assert_eq!(rate.next_after(t), Some(Utc.with_ymd_and_hms(2025, 7, 24, 8, 0, 0).unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    kind: Kind,
    zone: Zone,
    text: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Cron(Box<Cron>),
    Rate(Duration),
}

#[derive(Clone, Debug, PartialEq)]
enum Zone {
    Utc,
    #[cfg(feature = "tz")]
    Named(chrono_tz::Tz),
}

/// A parsed cron expression: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq)]
struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// `L`: the last day of the month.
    last_day: bool,
    days_any: bool,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    weekdays_any: bool,
    /// `None`: every year.
    years: Option<Vec<bool>>,
}

const YEAR_MIN: i32 = 1970;
const YEAR_MAX: i32 = 2199;
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's grammar: its range, value names (the first name stands for `first`), and
/// whether `?` and `L` are allowed.
struct FieldDef {
    name: &'static str,
    min: i32,
    max: i32,
    names: &'static [&'static str],
    first: i32,
    question: bool,
    last: bool,
}

/// A field's allowed values, whether it was unrestricted (`*` or `?`), and `L`.
struct Parsed {
    values: Vec<i32>,
    any: bool,
    last: bool,
}

fn bad(expr: &str, field: &str, why: impl fmt::Display) -> Error {
    Error::config(format!("schedule `{expr}`: {field} field: {why}"))
}

fn parse_field(expr: &str, text: &str, d: &FieldDef) -> Result<Parsed> {
    let mut out = Parsed {
        values: Vec::new(),
        any: false,
        last: false,
    };
    let value = |s: &str| -> Result<i32> {
        if let Some(i) = d.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(d.first + i as i32);
        }
        let v: i32 = s
            .parse()
            .map_err(|_| bad(expr, d.name, format!("`{s}` is not a number or name")))?;
        if v < d.min || v > d.max {
            return Err(bad(expr, d.name, format!("{v} is outside {}–{}", d.min, d.max)));
        }
        Ok(v)
    };
    for item in text.split(',') {
        if item == "?" {
            if !d.question {
                return Err(bad(expr, d.name, "`?` is allowed only in day-of-month and day-of-week"));
            }
            out.any = true;
            continue;
        }
        if item.eq_ignore_ascii_case("L") && d.last {
            out.last = true;
            continue;
        }
        // `2#1`, `15W`, `LW`, `5L`: digits (or `L`) with a suffix; names like `WED` and
        // `JUL` are not.
        let upper = item.to_ascii_uppercase();
        let suffixed = |c: char| {
            upper.len() > 1
                && upper.ends_with(c)
                && upper[..upper.len() - 1].chars().all(|x| x.is_ascii_digit() || x == 'L')
        };
        if upper.contains('#') || suffixed('W') || suffixed('L') {
            return Err(bad(
                expr,
                d.name,
                format!("`{item}` (nth weekday, nearest weekday and last-of forms are not supported)"),
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: i32 = s
                    .parse()
                    .map_err(|_| bad(expr, d.name, format!("step `{s}` is not a number")))?;
                if step < 1 {
                    return Err(bad(expr, d.name, "a step must be at least 1"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            if step == 1 && item == "*" {
                out.any = true;
            }
            (d.min, d.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15`: from 5 to the end of the range.
            (v, if step > 1 { d.max } else { v })
        };
        if lo > hi {
            return Err(bad(expr, d.name, format!("range `{range}` runs backwards")));
        }
        out.values.extend((lo..=hi).step_by(step as usize));
    }
    Ok(out)
}

fn bits(values: &[i32]) -> u64 {
    values.iter().fold(0u64, |b, v| b | (1u64 << v))
}

impl Cron {
    /// Five fields (Unix: minute hour day-of-month month day-of-week, Sunday 0 or 7) or six
    /// (AWS: the same then year, Sunday 1, `?` in one of the day fields).
    fn parse(expr: &str, text: &str) -> Result<Cron> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let aws = match fields.len() {
            5 => false,
            6 => true,
            n => {
                return Err(Error::config(format!(
                    "schedule `{expr}`: a cron expression has 5 fields (Unix) or 6 (AWS, with a year), not {n}"
                )));
            }
        };
        let def = |name, min, max, names, first, question, last| FieldDef {
            name,
            min,
            max,
            names,
            first,
            question,
            last,
        };
        let minutes = parse_field(expr, fields[0], &def("minute", 0, 59, &[], 0, false, false))?;
        let hours = parse_field(expr, fields[1], &def("hour", 0, 23, &[], 0, false, false))?;
        let days = parse_field(expr, fields[2], &def("day-of-month", 1, 31, &[], 1, true, true))?;
        let months = parse_field(expr, fields[3], &def("month", 1, 12, &MONTHS, 1, false, false))?;
        let (wd_min, wd_max, wd_first) = if aws { (1, 7, 1) } else { (0, 7, 0) };
        let weekdays = parse_field(
            expr,
            fields[4],
            &def("day-of-week", wd_min, wd_max, &WEEKDAYS, wd_first, true, false),
        )?;
        if aws && !days.any && !weekdays.any {
            return Err(Error::config(format!(
                "schedule `{expr}`: in the AWS form one of day-of-month and day-of-week must be `?`"
            )));
        }
        // Sunday is 0 in the result: AWS counts 1–7 from Sunday, Unix 0–7 with 7 = Sunday too.
        let weekday_bits = weekdays
            .values
            .iter()
            .map(|v| if aws { v - 1 } else { v % 7 })
            .collect::<Vec<_>>();
        let years = if aws {
            let y = parse_field(expr, fields[5], &def("year", YEAR_MIN, YEAR_MAX, &[], 0, false, false))?;
            (!y.any).then(|| {
                let mut set = vec![false; (YEAR_MAX - YEAR_MIN + 1) as usize];
                for v in y.values {
                    set[(v - YEAR_MIN) as usize] = true;
                }
                set
            })
        } else {
            None
        };
        Ok(Cron {
            minutes: bits(&minutes.values),
            hours: bits(&hours.values) as u32,
            days: bits(&days.values) as u32,
            last_day: days.last,
            days_any: days.any,
            months: bits(&months.values) as u16,
            weekdays: bits(&weekday_bits) as u8,
            weekdays_any: weekdays.any,
            years,
        })
    }

    fn date_matches(&self, d: NaiveDate) -> bool {
        let year_ok = self
            .years
            .as_ref()
            .is_none_or(|y| (YEAR_MIN..=YEAR_MAX).contains(&d.year()) && y[(d.year() - YEAR_MIN) as usize]);
        if !year_ok || self.months & (1 << d.month()) == 0 {
            return false;
        }
        let last = d.succ_opt().is_none_or(|n| n.month() != d.month());
        let dom = self.days & (1 << d.day()) != 0 || (self.last_day && last);
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        // Both restricted: either matches (Vixie cron); one unrestricted: the other decides.
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first local minute strictly after `start` (a whole minute) that matches, within
    /// six years, mapped to UTC by `to_utc` (a local time the zone skips is passed over).
    fn next(
        &self,
        start: NaiveDateTime,
        to_utc: impl Fn(NaiveDateTime) -> Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let mut date = start.date();
        for _ in 0..(366 * 6) {
            if self.date_matches(date) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                        let t = date.and_hms_opt(h, m, 0).expect("valid time");
                        if t >= start
                            && let Some(utc) = to_utc(t)
                        {
                            return Some(utc);
                        }
                    }
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

fn parse_rate(expr: &str, inner: &str) -> Result<Duration> {
    let (n, unit) = inner
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| Error::config(format!("schedule `{expr}`: a rate is `rate(<n> <minutes|hours|days>)`")))?;
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::config(format!("schedule `{expr}`: `{n}` is not a positive number")))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => {
            return Err(Error::config(format!(
                "schedule `{expr}`: unit `{other}` (minutes, hours or days)"
            )));
        }
    };
    Ok(Duration::from_secs(n * secs))
}

impl FromStr for Schedule {
    type Err = Error;

    /// `rate(6 hours)`, `cron(0 2 * * ? *)`, `0 2 * * ? *` (AWS) or `*/15 * * * *` (Unix).
    fn from_str(s: &str) -> Result<Schedule> {
        let text = s.trim();
        let wrapped = |prefix: &str| text.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        let kind = if let Some(inner) = wrapped("rate(") {
            Kind::Rate(parse_rate(text, inner)?)
        } else if let Some(inner) = wrapped("cron(") {
            if inner.split_whitespace().count() != 6 {
                return Err(Error::config(format!(
                    "schedule `{text}`: `cron(…)` takes the 6 AWS fields"
                )));
            }
            Kind::Cron(Box::new(Cron::parse(text, inner)?))
        } else {
            Kind::Cron(Box::new(Cron::parse(text, text)?))
        };
        Ok(Schedule {
            kind,
            zone: Zone::Utc,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.zone {
            Zone::Utc => f.write_str(&self.text),
            #[cfg(feature = "tz")]
            Zone::Named(tz) => write!(f, "{} ({tz})", self.text),
        }
    }
}

impl Schedule {
    /// Parses a schedule (see [`FromStr`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the expression and the field that is wrong.
    pub fn parse(s: &str) -> Result<Schedule> {
        s.parse()
    }

    /// The same schedule in a named IANA time zone (`Europe/Paris`): cron fields are local
    /// times. A local time the zone skips (spring forward) does not fire; a repeated one
    /// (fall back) fires once, at its first occurrence. Needs the `tz` feature.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown zone, or without the `tz` feature.
    pub fn in_time_zone(mut self, name: &str) -> Result<Schedule> {
        #[cfg(feature = "tz")]
        {
            let tz: chrono_tz::Tz = name
                .parse()
                .map_err(|_| Error::config(format!("schedule `{}`: unknown time zone `{name}`", self.text)))?;
            self.zone = Zone::Named(tz);
            Ok(self)
        }
        #[cfg(not(feature = "tz"))]
        {
            self.zone = Zone::Utc;
            Err(Error::config(format!(
                "schedule `{}`: time zone `{name}` needs the `tz` feature of etl-core",
                self.text
            )))
        }
    }

    /// The first fire time strictly after `t`; for a rate, `t` plus the rate (`t` being the
    /// previous fire). `None` when a cron expression never fires again (a past year, 30
    /// February).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Rate(d) => Some(t + chrono::Duration::from_std(*d).ok()?),
            Kind::Cron(c) => match &self.zone {
                Zone::Utc => next_in(c, &Utc, t),
                #[cfg(feature = "tz")]
                Zone::Named(tz) => next_in(c, tz, t),
            },
        }
    }
}

fn next_in<Z: TimeZone>(c: &Cron, zone: &Z, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = t.with_timezone(zone).naive_local();
    let start = local.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
    c.next(start, |n| {
        zone.from_local_datetime(&n)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .filter(|u| *u > t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, from: &str) -> String {
        next_in_zone(expr, None, from)
    }

    fn next_in_zone(expr: &str, zone: Option<&str>, from: &str) -> String {
        let mut s = Schedule::parse(expr).unwrap();
        if let Some(z) = zone {
            s = s.in_time_zone(z).unwrap();
        }
        s.next_after(at(from)).map_or("never".into(), |t| t.to_rfc3339())
    }

    #[test]
    fn aws_forms_fire_at_known_times() {
        assert_eq!(next("0 2 * * ? *", "2025-07-24T01:59:59Z"), "2025-07-24T02:00:00+00:00");
        assert_eq!(next("0 2 * * ? *", "2025-07-24T02:00:00Z"), "2025-07-25T02:00:00+00:00");
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2025-07-24T10:07:00Z"),
            "2025-07-24T10:15:00+00:00"
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2025-07-24T10:45:00Z"),
            "2025-07-24T11:00:00+00:00"
        );
        // 10:15 on weekdays: AWS counts days of the week 1–7 from Sunday (2 = Monday).
        assert_eq!(
            next("cron(15 10 ? * 2-6 *)", "2025-07-25T11:00:00Z"),
            "2025-07-28T10:15:00+00:00"
        );
        assert_eq!(
            next("cron(15 10 ? * MON-FRI *)", "2025-07-25T11:00:00Z"),
            "2025-07-28T10:15:00+00:00"
        );
        assert_eq!(
            next("cron(0 9 ? JUL WED *)", "2025-07-24T00:00:00Z"),
            "2025-07-30T09:00:00+00:00"
        );
        // The last day of each month, at 18:00.
        assert_eq!(
            next("cron(0 18 L * ? *)", "2024-02-01T00:00:00Z"),
            "2024-02-29T18:00:00+00:00"
        );
        // 08:00 on the first of January, July and December, 2026 only.
        assert_eq!(
            next("cron(0 8 1 1,7,DEC ? 2026)", "2025-07-24T00:00:00Z"),
            "2026-01-01T08:00:00+00:00"
        );
        assert_eq!(next("cron(0 8 1 1,7,DEC ? 2026)", "2026-12-01T08:00:00Z"), "never");
        assert_eq!(
            next("rate(6 hours)", "2025-07-24T01:30:00Z"),
            "2025-07-24T07:30:00+00:00"
        );
        assert_eq!(next("rate(1 day)", "2025-07-24T01:30:00Z"), "2025-07-25T01:30:00+00:00");
        assert_eq!(
            next("rate(15 minutes)", "2025-07-24T01:30:00Z"),
            "2025-07-24T01:45:00+00:00"
        );
    }

    #[test]
    fn unix_forms_fire_at_known_times() {
        assert_eq!(
            next("*/15 * * * *", "2025-07-24T10:07:30Z"),
            "2025-07-24T10:15:00+00:00"
        );
        // Sunday is 0 or 7 in the Unix form.
        assert_eq!(next("0 0 * * 0", "2025-07-24T00:00:00Z"), "2025-07-27T00:00:00+00:00");
        assert_eq!(next("0 0 * * 7", "2025-07-24T00:00:00Z"), "2025-07-27T00:00:00+00:00");
        // Both day fields restricted: either matches (the 1st, or any Monday).
        assert_eq!(next("30 6 1 * 1", "2025-07-24T00:00:00Z"), "2025-07-28T06:30:00+00:00");
        assert_eq!(next("0 12 30 2 *", "2025-07-24T00:00:00Z"), "never");
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let err = |e: &str| Schedule::parse(e).unwrap_err().to_string();
        assert!(err("0 2 * *").contains("5 fields"), "{}", err("0 2 * *"));
        assert!(err("61 * * * *").contains("minute field: 61 is outside 0–59"));
        assert!(err("0 2 1 * MON *").contains("must be `?`"));
        assert!(err("cron(0 2 * * *)").contains("6 AWS fields"));
        assert!(err("rate(0 hours)").contains("positive"));
        assert!(err("rate(6 weeks)").contains("unit `weeks`"));
        assert!(err("0 2 ? * 2#1 *").contains("not supported"));
        assert!(err("0 2 ? * FOO *").contains("`FOO` is not a number or name"));
    }

    #[cfg(feature = "tz")]
    #[test]
    fn named_time_zones_follow_daylight_saving() {
        let paris = |e: &str, from: &str| next_in_zone(e, Some("Europe/Paris"), from);
        // 02:00 in Paris is 00:00 UTC in summer, 01:00 UTC in winter.
        assert_eq!(
            paris("cron(0 2 * * ? *)", "2025-07-24T12:00:00Z"),
            "2025-07-25T00:00:00+00:00"
        );
        assert_eq!(
            paris("cron(0 2 * * ? *)", "2025-12-24T12:00:00Z"),
            "2025-12-25T01:00:00+00:00"
        );
        // 02:30 does not exist on 30 March 2025 in Paris: the next fire is the day after.
        assert_eq!(paris("30 2 * * *", "2025-03-29T12:00:00Z"), "2025-03-31T00:30:00+00:00");
        // 02:30 happens twice on 26 October 2025: it fires once, at the first.
        assert_eq!(paris("30 2 * * *", "2025-10-25T12:00:00Z"), "2025-10-26T00:30:00+00:00");
        assert_eq!(paris("30 2 * * *", "2025-10-26T00:30:00Z"), "2025-10-27T01:30:00+00:00");
        assert!(
            Schedule::parse("0 2 * * *")
                .unwrap()
                .in_time_zone("Mars/Olympus")
                .is_err()
        );
    }
}
