//! `datetime`: confd's `time.Now`, a value with Go's `Format` method
//! (`{{datetime.Format "2006-01-02T15:04:05Z07:00"}}`, Go's reference-time
//! layouts) that prints as Go prints a `time.Time`
//! (`2006-01-02 15:04:05.999999999 -0700 MST`).

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Local, Timelike};
use gotemplate::{Function, Value};

/// The current local time as a template value.
pub(super) fn now() -> Value {
    time_value(Local::now())
}

fn time_value(t: DateTime<Local>) -> Value {
    let format_fn = Function::new(move |args: &[Value]| match args {
        [Value::String(layout)] => Ok(Value::from(format(&t, layout))),
        [other] => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
        _ => Err(format!(
            "wrong number of args for Format: want 1 got {}",
            args.len()
        )),
    });
    let string = Function::new(move |_: &[Value]| {
        Ok(Value::from(format(
            &t,
            "2006-01-02 15:04:05.999999999 -0700 MST",
        )))
    });
    let unix = Function::new(move |_: &[Value]| Ok(Value::Int(t.timestamp())));
    Value::Map(Arc::new(
        [
            ("Format".to_string(), Value::Func(format_fn)),
            ("String".to_string(), Value::Func(string)),
            ("Unix".to_string(), Value::Func(unix)),
        ]
        .into_iter()
        .collect(),
    ))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Go's `Time.Format`: the layout's reference-time elements (`2006`, `01`,
/// `Jan`, `15`, `04`, `05`, `.000`, `MST`, `-07:00`, ...) replaced by `t`'s.
pub(super) fn format(t: &DateTime<Local>, layout: &str) -> String {
    let mut out = String::with_capacity(layout.len() + 10);
    let offset = t.offset().local_minus_utc();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        // Longest elements first, as Go's nextStdChunk tries them.
        const ELEMENTS: &[&str] = &[
            "January",
            "Monday",
            "Z07:00:00",
            "-07:00:00",
            "Z070000",
            "-070000",
            "Z07:00",
            "-07:00",
            "Z0700",
            "-0700",
            "2006",
            "Jan",
            "Mon",
            "MST",
            "002",
            "__2",
            "_2",
            "15",
            "01",
            "02",
            "03",
            "04",
            "05",
            "06",
            "Z07",
            "-07",
            "PM",
            "pm",
            "1",
            "2",
            "3",
            "4",
            "5",
        ];
        for el in ELEMENTS {
            if let Some(after) = rest.strip_prefix(el) {
                // Go: "Jan" only when not followed by a lower-case letter
                // ("Janet"), likewise "Mon" and "MST".
                if matches!(*el, "Jan" | "Mon")
                    && after.starts_with(|c: char| c.is_ascii_lowercase())
                {
                    continue;
                }
                element(&mut out, t, el, offset);
                rest = after;
                continue 'outer;
            }
        }
        // Fractional seconds: `.000` / `,000` (fixed) or `.999` (trimmed).
        if let Some(c @ ('.' | ',')) = rest.chars().next() {
            let digits: String = rest[1..]
                .chars()
                .take_while(|d| *d == '0' || *d == '9')
                .collect();
            let same = digits.chars().all(|d| digits.starts_with(d));
            let next_is_digit = rest[1 + digits.len()..].starts_with(|d: char| d.is_ascii_digit());
            if !digits.is_empty() && same && !next_is_digit {
                let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let mut frac = nanos[..digits.len().min(9)].to_string();
                if digits.starts_with('9') {
                    while frac.ends_with('0') {
                        frac.pop();
                    }
                    if !frac.is_empty() {
                        out.push(c);
                        out.push_str(&frac);
                    }
                } else {
                    out.push(c);
                    out.push_str(&frac);
                }
                rest = &rest[1 + digits.len()..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Go's layout as a chrono strftime format, for `sidekick convert`
/// (`2006-01-02 15:04` -> `%Y-%m-%d %H:%M`); `None` for an element strftime
/// has no spelling of (`__2`, `.999`).
pub(crate) fn to_strftime(layout: &str) -> Option<String> {
    const MAP: &[(&str, &str)] = &[
        ("January", "%B"),
        ("Monday", "%A"),
        ("Z07:00", "%:z"),
        ("-07:00", "%:z"),
        ("Z0700", "%z"),
        ("-0700", "%z"),
        ("2006", "%Y"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("002", "%j"),
        ("_2", "%e"),
        ("15", "%H"),
        ("01", "%m"),
        ("02", "%d"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("06", "%y"),
        ("PM", "%p"),
        ("pm", "%P"),
        (".000000000", "%.9f"),
        (".000000", "%.6f"),
        (".000", "%.3f"),
        ("1", "%-m"),
        ("2", "%-d"),
        ("3", "%-I"),
        ("4", "%-M"),
        ("5", "%-S"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        if rest.starts_with("__2") || rest.starts_with(".9") || rest.starts_with(",0") {
            return None;
        }
        for (go, strf) in MAP {
            if let Some(after) = rest.strip_prefix(go) {
                out.push_str(strf);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        match chars.next() {
            Some('%') => out.push_str("%%"),
            Some(c) => out.push(c),
            None => {}
        }
        rest = chars.as_str();
    }
    Some(out)
}

fn element(out: &mut String, t: &DateTime<Local>, el: &str, offset: i32) {
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    // Writing to a String cannot fail.
    let _ = match el {
        "January" => write!(out, "{}", MONTHS[t.month0() as usize]),
        "Jan" => write!(out, "{}", &MONTHS[t.month0() as usize][..3]),
        "Monday" => write!(out, "{}", DAYS[t.weekday().num_days_from_sunday() as usize]),
        "Mon" => write!(
            out,
            "{}",
            &DAYS[t.weekday().num_days_from_sunday() as usize][..3]
        ),
        "2006" => write!(out, "{:04}", t.year()),
        "06" => write!(out, "{:02}", t.year().rem_euclid(100)),
        "01" => write!(out, "{:02}", t.month()),
        "1" => write!(out, "{}", t.month()),
        "02" => write!(out, "{:02}", t.day()),
        "2" => write!(out, "{}", t.day()),
        "_2" => write!(out, "{:>2}", t.day()),
        "002" => write!(out, "{:03}", t.ordinal()),
        "__2" => write!(out, "{:>3}", t.ordinal()),
        "15" => write!(out, "{:02}", t.hour()),
        "03" => write!(out, "{hour12:02}"),
        "3" => write!(out, "{hour12}"),
        "04" => write!(out, "{:02}", t.minute()),
        "4" => write!(out, "{}", t.minute()),
        "05" => write!(out, "{:02}", t.second()),
        "5" => write!(out, "{}", t.second()),
        "PM" => write!(out, "{}", if t.hour() >= 12 { "PM" } else { "AM" }),
        "pm" => write!(out, "{}", if t.hour() >= 12 { "pm" } else { "am" }),
        "MST" => write!(out, "{}", zone_name(offset)),
        zone => write_offset(out, zone, offset),
    };
}

/// Go prints the zone's abbreviation; without a zone database at hand, UTC
/// is `UTC` and another offset prints as Go prints a zone with no name
/// (`+0200`).
fn zone_name(offset: i32) -> String {
    if offset == 0 {
        return "UTC".to_string();
    }
    let mut s = String::new();
    let _ = write_offset(&mut s, "-0700", offset);
    s
}

/// `-07:00`, `Z07:00` (`Z` for UTC) and the other offset elements.
fn write_offset(out: &mut String, el: &str, offset: i32) -> std::fmt::Result {
    if el.starts_with('Z') && offset == 0 {
        out.push('Z');
        return Ok(());
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    let (h, m, s) = (abs / 3600, (abs / 60) % 60, abs % 60);
    let body = el.trim_start_matches(['Z', '-']);
    match body {
        "07" => write!(out, "{sign}{h:02}"),
        "0700" => write!(out, "{sign}{h:02}{m:02}"),
        "07:00" => write!(out, "{sign}{h:02}:{m:02}"),
        "070000" => write!(out, "{sign}{h:02}{m:02}{s:02}"),
        _ => write!(out, "{sign}{h:02}:{m:02}:{s:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn layouts_as_strftime() {
        assert_eq!(
            to_strftime("2006-01-02T15:04:05Z07:00").as_deref(),
            Some("%Y-%m-%dT%H:%M:%S%:z")
        );
        assert_eq!(
            to_strftime("Jan 2, 2006 at 3:04pm (MST) 100%").as_deref(),
            Some("%b %-d, %Y at %-I:%M%P (%Z) %-m00%%")
        );
        assert_eq!(to_strftime("05.999"), None);
    }

    #[test]
    fn go_layouts() {
        let t = Local
            .with_ymd_and_hms(2009, 11, 10, 23, 4, 5)
            .single()
            .unwrap()
            + chrono::Duration::nanoseconds(120_000_000);
        assert_eq!(format(&t, "2006-01-02 15:04:05"), "2009-11-10 23:04:05");
        assert_eq!(
            format(&t, "Jan 2, 2006 at 3:04pm"),
            "Nov 10, 2009 at 11:04pm"
        );
        assert_eq!(format(&t, "Monday January _2 06"), "Tuesday November 10 09");
        assert_eq!(format(&t, "05.000 05.999 05.9"), "05.120 05.12 05.1");
        assert_eq!(format(&t, "002 PM"), "314 PM");
        let offset = t.offset().local_minus_utc();
        if offset == 0 {
            assert_eq!(format(&t, "Z07:00 -0700 MST"), "Z +0000 UTC");
        }
    }
}
