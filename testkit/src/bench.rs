//! What the backend benchmarks (`backends/*/examples/bench.rs`) share: a
//! confdir with one resource, the process to measure and its costs read from
//! `/proc`, and how figures are printed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait;

/// The benchmarks' error: any, with its message.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The environment variable `name` as a number, else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A confdir in `base` with one resource `NAME` rendering `template` from
/// `keys` into `NAME.out` beside it.
pub fn confdir(base: &Path, name: &str, keys: &str, template: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("sidekick-bench-")
        .tempdir_in(base)?;
    std::fs::create_dir_all(dir.path().join("conf.d"))?;
    std::fs::create_dir_all(dir.path().join("templates"))?;
    std::fs::write(dir.path().join(format!("templates/{name}.tmpl")), template)?;
    std::fs::write(
        dir.path().join(format!("conf.d/{name}.toml")),
        format!(
            "[template]\nsrc = \"{name}.tmpl\"\ndest = \"{}\"\nkeys = [\"{keys}\"]\n",
            dir.path().join(format!("{name}.out")).display()
        ),
    )?;
    Ok(dir)
}

/// A child process killed and reaped when dropped.
pub struct Stop(pub Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sidekick run with `args` (the backend and its node) on `confdir`, warnings
/// only, its output discarded.
fn sidekick_command(sidekick: &Path, args: &[&str], confdir: &Path) -> Command {
    let mut command = Command::new(sidekick);
    command
        .args(args)
        .arg("--confdir")
        .arg(confdir)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A `--watch` sidekick (as [`sidekick_command`]) whose warnings show.
pub fn spawn_watch(sidekick: &Path, args: &[&str], confdir: &Path) -> Result<Child> {
    Ok(sidekick_command(sidekick, args, confdir)
        .arg("--watch")
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// The wall time of one `--onetime` run (as [`sidekick_command`]), `dest`
/// removed first so that the run renders and writes it.
pub fn onetime(sidekick: &Path, args: &[&str], confdir: &Path, dest: &Path) -> Result<Duration> {
    let _ = std::fs::remove_file(dest);
    let started = Instant::now();
    let status = sidekick_command(sidekick, args, confdir)
        .arg("--onetime")
        .status()?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("--onetime failed: {status}").into());
    }
    Ok(wall)
}

/// Waits until `path` holds exactly `content`.
pub fn wait_for(path: &Path, content: &str, timeout: Duration) -> Result<()> {
    if !wait::until(timeout, || {
        std::fs::read_to_string(path).is_ok_and(|t| t == content)
    }) {
        return Err(format!("{} never held {content:?}", path.display()).into());
    }
    Ok(())
}

/// Polls `dest` every `poll` until it holds exactly `expected`, and returns
/// the time since `started`: how long a change took to reach the file. Fails
/// after 5 s. `buf` is reused from call to call, so polling allocates nothing.
pub fn time_to_file(
    dest: &Path,
    expected: &str,
    started: Instant,
    poll: Duration,
    buf: &mut String,
) -> Result<Duration> {
    let deadline = started + Duration::from_secs(5);
    loop {
        buf.clear();
        if let Ok(mut f) = std::fs::File::open(dest) {
            let _ = f.read_to_string(buf);
        }
        if buf == expected {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("{expected:?} never reached {}", dest.display()).into());
        }
        std::thread::sleep(poll);
    }
}

/// The `p` quantile (0.5: the median) of `sorted`, which is not empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `d` in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// utime + stime in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A `kB` field of /proc/PID/status (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or(format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status line")?
        .parse()?)
}
