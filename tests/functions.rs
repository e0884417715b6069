//! Template functions whose output depends on the machine or the clock
//! (`hostname`, `datetime`, `lookupIP`), so they cannot be golden; `lookupSRV`
//! answers shuffled by the DNS server causing no rewrite and no reload; and the
//! catalog functions' error without a service catalog.

use std::process::Command;

use crate::harness::Dir;
use sidekick_testkit::dns::DnsServer;

/// Renders `template` once with the file backend and returns the output.
fn render(dir: &Dir, template: &str) -> String {
    dir.data("k: v\n");
    let dest = dir.simple("t", template, "");
    dir.onetime().run();
    std::fs::read_to_string(dest).unwrap()
}

#[test]
fn hostname_is_the_os_hostname() {
    let dir = Dir::new();
    let out = render(&dir, "{{ hostname() }}");
    // What the OS reports: the `hostname` command, or the kernel's own file
    // where that command is not installed.
    let expected = match Command::new("hostname").output() {
        Ok(os) if os.status.success() => String::from_utf8_lossy(&os.stdout).trim().to_string(),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("read /proc/sys/kernel/hostname")
            .trim()
            .to_string(),
    };
    assert!(!expected.is_empty());
    assert_eq!(out, expected);
}

#[test]
fn datetime_formats_the_current_time() {
    let dir = Dir::new();
    let out = render(
        &dir,
        "{{ datetime(format=\"%Y\") }}|{{ datetime(format=\"%Y-%m-%d\") }}|{{ datetime() }}",
    );
    let date = |fmt: &str| {
        let o = Command::new("date").arg(fmt).output().expect("run date");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(parts.len(), 3, "{out}");
    // Around midnight of New Year the year may roll over between the two reads.
    let year_now = date("+%Y");
    assert!(
        parts[0] == year_now
            || parts[0].parse::<u32>().unwrap() + 1 == year_now.parse::<u32>().unwrap(),
        "{out} vs {year_now}"
    );
    assert_eq!(parts[1].len(), 10, "{out}");
    assert!(parts[1].starts_with(parts[0]), "{out}");
    // Default format: RFC 3339 to the second, e.g. 2025-01-31T12:34:56+00:00.
    let d = parts[2];
    assert!(d.starts_with(parts[1]), "{out}");
    assert_eq!(&d[10..11], "T", "{out}");
    assert!(d.len() >= 25, "{out}");
}

#[test]
fn lookup_ip_resolves_localhost_sorted() {
    let dir = Dir::new();
    let out = render(
        &dir,
        "{{ lookupIP(name=\"localhost\") | join(sep=\",\") }}|{{ lookupIP(name=\"127.0.0.1\") | join(sep=\",\") }}",
    );
    let (localhost, literal) = out.split_once('|').unwrap();
    let ips: Vec<&str> = localhost.split(',').collect();
    assert!(ips.contains(&"127.0.0.1"), "{out}");
    let mut sorted = ips.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ips, sorted, "lookupIP results are sorted and unique");
    assert_eq!(literal, "127.0.0.1");
}

#[test]
fn lookup_ip_of_unknown_name_is_an_error() {
    let dir = Dir::new();
    dir.data("k: v\n");
    dir.simple("t", "{{ lookupIP(name=\"no-such-host.invalid\") }}", "");
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["lookupIP", "no-such-host.invalid", "t.tmpl:1:"]);
}

/// The DNS server answers in a different order each time; lookupSRV sorts, so
/// a second run finds the file unchanged and runs no reload command.
#[test]
fn lookup_srv_shuffling_causes_no_rewrite_or_reload() {
    let dir = Dir::new();
    let dns = DnsServer::start();
    dir.write("resolv.conf", "options ndots:1\n");
    dir.data("k: v\n");
    let dest = dir.simple(
        "srv",
        "{% for s in lookupSRV(service=\"http\", proto=\"tcp\", name=\"sidekick.test\") %}{{ s.target }}:{{ s.port }}\n{% endfor %}",
        "reload_cmd = \"echo reload >> @DIR@/reloads\"",
    );
    let run = || {
        dir.onetime()
            .env("SIDEKICK_DNS_SERVER", dns.addr())
            .env("SIDEKICK_RESOLV_CONF", dir.path("resolv.conf"))
            .run()
    };
    run();
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "web1.sidekick.test.:8080\nweb2.sidekick.test.:8081\n"
    );
    let queries = dns.queries();
    assert!(queries >= 1);
    run();
    assert!(dns.queries() > queries, "second run queried again");
    assert_eq!(dir.read("reloads"), "reload\n", "reload ran once only");
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "web1.sidekick.test.:8080\nweb2.sidekick.test.:8081\n"
    );
}

#[test]
fn catalog_functions_without_a_catalog_name_the_backend() {
    // File backend without --services-file.
    let dir = Dir::new();
    dir.data("k: v\n");
    dir.simple("t", "{{ services() | join(sep=\",\") }}", "");
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["backend file has no service catalog", "services()"]);

    // env backend.
    let dir = Dir::new();
    dir.template("t.tmpl", "{{ service(name=\"web\") | length }}");
    dir.resource(
        "t",
        "[template]\nsrc = \"t.tmpl\"\ndest = \"@OUT@/t.conf\"\nkeys = [\"/db\"]\n",
    );
    dir.command()
        .args(["--backend", "env", "--onetime"])
        .run_fail()
        .assert_stderr_has(&["backend env has no service catalog", "service()"]);
}
