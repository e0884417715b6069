//! End-to-end: the real `sidekick` binary with `--backend vault` against the
//! in-process fake Vault (or a real one with `SIDEKICK_TEST_VAULT_ADDR` and
//! `SIDEKICK_TEST_VAULT_TOKEN`). The fake and its harness are
//! `sidekick_testkit::vault`, shared with the backend crate's tests. Vault
//! has no watch: `--watch --interval 1` polls every second, so each change
//! here takes up to a second to land.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::json;
use sidekick_testkit::vault::Vault;

use crate::harness::Dir;

/// Identity of a file's current version: a rewrite renames a new file over it.
fn version(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// Two resources on mount `m`: `db` reads `/m/app/db`, `web` reads
/// `/m/app/web` (and may render empty, when that secret is deleted).
fn two_resources(m: &str) -> Dir {
    let dir = Dir::new();
    dir.template(
        "db.tmpl",
        &format!(
            "user={{{{ getv(key=\"/{m}/app/db/user\") }}}}\npassword={{{{ getv(key=\"/{m}/app/db/password\") }}}}\n"
        ),
    );
    dir.resource(
        "db",
        &format!(
            "[template]\nsrc = \"db.tmpl\"\ndest = \"@OUT@/db.conf\"\nkeys = [\"/{m}/app/db\"]\n"
        ),
    );
    dir.template(
        "web.tmpl",
        &format!(
            "{{% for kv in gets(pattern=\"/{m}/app/web/*\") %}}{{{{ kv.key }}}}={{{{ kv.value }}}}\n{{% endfor %}}"
        ),
    );
    dir.resource(
        "web",
        &format!("[template]\nsrc = \"web.tmpl\"\ndest = \"@OUT@/web.conf\"\nkeys = [\"/{m}/app/web\"]\nallow_empty = true\n"),
    );
    dir
}

fn args<'a>(vault: &'a Vault, token: &'a str) -> Vec<String> {
    vec![
        "--backend".into(),
        "vault".into(),
        "--node".into(),
        vault.url(),
        "--vault-token".into(),
        token.to_string(),
    ]
}

#[test]
fn secrets_render_and_each_change_rerenders_only_its_resource() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"user": "app", "password": "pw-1"}));
    vault.put(&m, 2, "app/web", json!({"a": "web-a"}));
    let dir = two_resources(&m);
    let root = vault.root_token();

    dir.command()
        .args(args(&vault, &root))
        .arg("--onetime")
        .run();
    assert_eq!(dir.read("out/db.conf"), "user=app\npassword=pw-1\n");
    assert_eq!(dir.read("out/web.conf"), format!("/{m}/app/web/a=web-a\n"));

    let mut run = dir
        .command()
        .args(args(&vault, &root))
        .args(["--watch", "--interval", "1"])
        .spawn();
    let web = version(&dir.out("web.conf"));
    vault.put(&m, 2, "app/db", json!({"user": "app", "password": "pw-2"}));
    run.wait_for_file(&dir.out("db.conf"), "user=app\npassword=pw-2\n");
    assert_eq!(version(&dir.out("web.conf")), web, "web.conf was rewritten");

    // A field added, then the secret deleted (its keys vanish).
    let db = version(&dir.out("db.conf"));
    vault.put(&m, 2, "app/web", json!({"a": "web-a", "b": "web-b"}));
    run.wait_for_file(
        &dir.out("web.conf"),
        &format!("/{m}/app/web/a=web-a\n/{m}/app/web/b=web-b\n"),
    );
    vault.delete(&m, 2, "app/web");
    run.wait_for_file(&dir.out("web.conf"), "");
    assert_eq!(version(&dir.out("db.conf")), db, "db.conf was rewritten");
    run.stop();
    dir.assert_no_stage_files();
}

#[test]
fn a_server_killed_and_restarted_mid_watch_ends_with_the_right_file() {
    let vault = Vault::start();
    let Some(fake) = vault.fake("killing the server") else {
        return;
    };
    let m = vault.mount("kv", 1);
    vault.put(
        &m,
        1,
        "app/db",
        json!({"user": "app", "password": "before"}),
    );
    let dir = two_resources(&m);
    let root = vault.root_token();
    let mut run = dir
        .command()
        .args(args(&vault, &root))
        .args(["--watch", "--interval", "1"])
        .spawn();
    run.wait_for_file(&dir.out("db.conf"), "user=app\npassword=before\n");
    let mark = run.stderr_mark();
    fake.stop();
    run.wait_stderr_after(mark, &vault.url(), 1);
    // The file stays as it was while Vault is away.
    assert_eq!(dir.read("out/db.conf"), "user=app\npassword=before\n");
    fake.restart();
    vault.put(&m, 1, "app/db", json!({"user": "app", "password": "after"}));
    run.wait_for_file(&dir.out("db.conf"), "user=app\npassword=after\n");
    run.stop();
}

#[test]
fn a_refused_token_or_approle_login_is_a_clear_error_without_the_credential() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"user": "app", "password": "pw"}));
    let dir = two_resources(&m);
    let out = dir
        .command()
        .args(args(&vault, "hvs.wrong-token-s3cret"))
        .arg("--onetime")
        .run_fail();
    out.assert_stderr_has(&["refused the token", "403", "--vault-token"]);
    assert!(!out.stderr.contains("wrong-token-s3cret"), "{out}");

    let (role_id, _) = vault.approle(&[&format!("{m}/")], std::time::Duration::from_secs(600));
    let out = dir
        .command()
        .args(["--backend", "vault", "--node", &vault.url()])
        .args(["--vault-role-id", &role_id])
        .env("SIDEKICK_VAULT_SECRET_ID", "not-the-secret-id-s3cret")
        .env_remove("VAULT_TOKEN")
        .arg("--onetime")
        .run_fail();
    out.assert_stderr_has(&["AppRole login", "refused", "400"]);
    assert!(!out.stderr.contains("not-the-secret-id-s3cret"), "{out}");
}

#[test]
fn approle_login_renders() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"user": "app", "password": "pw"}));
    let dir = two_resources(&m);
    let (role_id, secret_id) =
        vault.approle(&[&format!("{m}/")], std::time::Duration::from_secs(600));
    dir.command()
        .args(["--backend", "vault", "--node", &vault.url()])
        .args(["--vault-role-id", &role_id, "--vault-mount", &m])
        .env("SIDEKICK_VAULT_SECRET_ID", &secret_id)
        .env_remove("VAULT_TOKEN")
        .arg("--onetime")
        .run();
    assert_eq!(dir.read("out/db.conf"), "user=app\npassword=pw\n");
}

#[test]
fn secret_values_reach_no_log_line_or_diff_at_debug() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(
        &m,
        2,
        "app/db",
        json!({"user": "app", "password": "FIRST-s3cr3t"}),
    );
    vault.put(&m, 2, "app/web", json!({"a": "WEB-s3cr3t"}));
    let dir = two_resources(&m);
    let root = vault.root_token();
    let mut run = dir
        .command()
        .args(args(&vault, &root))
        .args([
            "--watch",
            "--interval",
            "1",
            "--diff",
            "--log-level",
            "debug",
        ])
        .spawn();
    run.wait_for_file(&dir.out("db.conf"), "user=app\npassword=FIRST-s3cr3t\n");
    vault.put(
        &m,
        2,
        "app/db",
        json!({"user": "app", "password": "SECOND-s3cr3t"}),
    );
    run.wait_for_file(&dir.out("db.conf"), "user=app\npassword=SECOND-s3cr3t\n");
    run.stop();
    let all = run.transcript();
    assert!(all.contains("secret:"), "the diff is there, masked:{all}");
    for needle in ["FIRST-s3cr3t", "SECOND-s3cr3t", "WEB-s3cr3t"] {
        assert!(!all.contains(needle), "{needle} in the output:{all}");
    }
}

#[test]
fn onetime_with_vault_down_fails_naming_the_endpoint() {
    let port = sidekick_testkit::net::free_port();
    let dir = Dir::new();
    dir.template("x.tmpl", "{{ getv(key=\"/secret/x/y\", default=\"d\") }}\n");
    dir.resource(
        "x",
        "[template]\nsrc = \"x.tmpl\"\ndest = \"@OUT@/x.conf\"\nkeys = [\"/secret/x\"]\n",
    );
    let node = format!("http://127.0.0.1:{port}");
    let out = dir
        .command()
        .args(["--backend", "vault", "--node", &node, "--vault-token", "t"])
        .arg("--onetime")
        .run_fail();
    out.assert_stderr_has(&[&format!("127.0.0.1:{port}"), "cannot connect"]);
}
