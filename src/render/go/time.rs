//! `datetime`: the current local time, printed as Go prints a `time.Time`
//! (`2006-01-02 15:04:05.999999999 -0700 MST`).

use gotemplate::Value;

/// The current local time as Go's `time.Now().String()` (without the
/// monotonic clock reading Go appends).
pub(super) fn now() -> Value {
    let now = chrono::Local::now();
    let mut frac = now.format("%f").to_string();
    while frac.ends_with('0') {
        frac.pop();
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    let offset = now.format("%z").to_string();
    Value::from(format!(
        "{}{frac} {offset} {}",
        now.format("%Y-%m-%d %H:%M:%S"),
        zone_name(&offset)
    ))
}

/// Go prints the zone's abbreviation; without a zone database at hand, UTC
/// is `UTC` and other offsets print as Go prints a zone with no name (`+0200`).
fn zone_name(offset: &str) -> String {
    if offset == "+0000" {
        "UTC".to_string()
    } else {
        offset.to_string()
    }
}
