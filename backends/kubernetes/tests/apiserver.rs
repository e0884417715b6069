//! The test API server's own behaviours, checked with raw HTTP and with kube's
//! client in the modes the backend does not use by default (paged lists,
//! streaming lists, label selectors), so the backend's tests rest on a server
//! that answers as the API documentation says.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use serde_json::{json, Value};
use sidekick_testkit::kubernetes::apiserver::{ApiServer, TOKEN, USER};
use sidekick_testkit::kubernetes::{self, objects};

/// One GET; returns the status code and the JSON body.
fn get(server: &ApiServer, target: &str, token: Option<&str>) -> (u16, Value) {
    let mut conn = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        conn,
        "GET {target} HTTP/1.1\r\nHost: test\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, serde_json::from_str(body).expect("a JSON body"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn cm(server: &ApiServer, name: &str, labels: Value, data: &[(&str, &str)]) -> u64 {
    let mut o = objects::configmap(name, data);
    o["metadata"]["labels"] = labels;
    server.apply(o)
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn requests_without_the_token_are_unauthorized() {
    let server = ApiServer::start();
    let (code, body) = get(&server, CMS, None);
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let (code, _) = get(&server, CMS, Some("wrong"));
    assert_eq!(code, 401);
    assert_eq!(get(&server, CMS, Some(TOKEN)).0, 200);
}

#[test]
fn lists_page_at_one_resource_version_and_expire_when_compacted() {
    let server = ApiServer::start();
    for n in ["a", "b", "c"] {
        cm(&server, n, json!({}), &[("k", n)]);
    }
    let (code, page1) = get(&server, &format!("{CMS}?limit=2"), Some(TOKEN));
    assert_eq!(code, 200);
    assert_eq!(page1["kind"], "ConfigMapList");
    assert_eq!(names(&page1), ["a", "b"]);
    assert_eq!(page1["metadata"]["remainingItemCount"], 1);
    assert!(
        page1["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    let rv = page1["metadata"]["resourceVersion"].clone();
    // A change between pages does not show: the pages are read at one version.
    cm(&server, "c", json!({}), &[("k", "changed")]);
    let (_, page2) = get(
        &server,
        &format!("{CMS}?limit=2&continue={token}"),
        Some(TOKEN),
    );
    assert_eq!(names(&page2), ["c"]);
    assert_eq!(page2["items"][0]["data"]["k"], "c");
    assert_eq!(page2["metadata"]["resourceVersion"], rv);
    assert!(page2["metadata"].get("continue").is_none());

    server.compact();
    let (code, body) = get(
        &server,
        &format!("{CMS}?limit=2&continue={token}"),
        Some(TOKEN),
    );
    assert_eq!(code, 410);
    assert_eq!(body["reason"], "Expired");
}

#[test]
fn list_resource_version_semantics() {
    let server = ApiServer::start();
    let rv1 = cm(&server, "a", json!({}), &[("k", "1")]);
    let rv2 = cm(&server, "a", json!({}), &[("k", "2")]);
    assert!(rv2 > rv1);
    // The same content again is no change: same resourceVersion.
    assert_eq!(cm(&server, "a", json!({}), &[("k", "2")]), rv2);

    let exact = |rv: u64| {
        get(
            &server,
            &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            Some(TOKEN),
        )
    };
    let (code, old) = exact(rv1);
    assert_eq!(code, 200);
    assert_eq!(old["items"][0]["data"]["k"], "1");
    assert_eq!(old["metadata"]["resourceVersion"], rv1.to_string());

    let (code, newest) = get(
        &server,
        &format!("{CMS}?resourceVersion={rv1}&resourceVersionMatch=NotOlderThan"),
        Some(TOKEN),
    );
    assert_eq!(code, 200);
    assert_eq!(newest["items"][0]["data"]["k"], "2");

    let (code, body) = get(
        &server,
        &format!("{CMS}?resourceVersionMatch=Exact"),
        Some(TOKEN),
    );
    assert_eq!(code, 422);
    assert_eq!(body["reason"], "Invalid");

    let (code, body) = get(&server, &format!("{CMS}?resourceVersion=999"), Some(TOKEN));
    assert_eq!(code, 504);
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .contains("Too large resource version"));

    server.compact();
    let (code, body) = exact(rv1);
    assert_eq!(code, 410);
    assert_eq!(body["reason"], "Expired");
}

#[test]
fn selectors_filter_lists() {
    let server = ApiServer::start();
    cm(&server, "a", json!({"tier": "web", "env": "prod"}), &[]);
    cm(&server, "b", json!({"tier": "db"}), &[]);
    cm(&server, "c", json!({}), &[]);
    let list = |q: &str| {
        let (code, body) = get(&server, &format!("{CMS}?{q}"), Some(TOKEN));
        assert_eq!(code, 200, "{q}: {body}");
        names(&body)
    };
    assert_eq!(list("fieldSelector=metadata.name%3Db"), ["b"]);
    assert_eq!(list("fieldSelector=metadata.name!%3Db"), ["a", "c"]);
    assert_eq!(list("labelSelector=tier%3Dweb"), ["a"]);
    assert_eq!(list("labelSelector=tier%20in%20(web,db)"), ["a", "b"]);
    assert_eq!(list("labelSelector=tier%20notin%20(web)"), ["b", "c"]);
    assert_eq!(list("labelSelector=tier"), ["a", "b"]);
    assert_eq!(list("labelSelector=!tier"), ["c"]);
    assert_eq!(list("labelSelector=tier,env%3Dprod"), ["a"]);
    let (code, body) = get(
        &server,
        &format!("{CMS}?fieldSelector=data.k%3Dx"),
        Some(TOKEN),
    );
    assert_eq!(code, 400);
    assert_eq!(body["message"], "field label not supported: data.k");
}

#[test]
fn forbidden_and_not_found_use_the_standard_status() {
    let server = ApiServer::start();
    server.forbid("list", "endpointslices");
    let (code, body) = get(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        Some(TOKEN),
    );
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        format!(
            "endpointslices.discovery.k8s.io is forbidden: User \"{USER}\" cannot list resource \
             \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"default\""
        )
    );
    let (code, body) = get(&server, &format!("{CMS}/nope"), Some(TOKEN));
    assert_eq!(code, 404);
    assert_eq!(body["message"], "configmaps \"nope\" not found");
    assert_eq!(
        get(&server, "/api/v1/namespaces/default/pods", Some(TOKEN)).0,
        404
    );
}

fn client(server: &ApiServer) -> Client {
    let mut config = Config::new(server.url().parse().expect("url"));
    config.auth_info.token = Some(TOKEN.to_string().into());
    Client::try_from(config).expect("client")
}

/// Events until the first `InitDone`, as names (`+a` for InitApply of a).
async fn initial(
    stream: &mut (impl futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin),
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(kubernetes::TIMEOUT, stream.try_next())
            .await
            .expect("in time")
            .expect("no error")
            .expect("an event");
        match event {
            Event::Init => seen.push("init".to_string()),
            Event::InitApply(cm) => seen.push(format!("+{}", cm.metadata.name.unwrap_or_default())),
            Event::InitDone => return seen,
            other => seen.push(format!("{other:?}")),
        }
    }
}

#[tokio::test]
async fn kube_watcher_pages_and_streams_initial_lists() {
    let server = ApiServer::start();
    for n in ["a", "b", "c"] {
        cm(&server, n, json!({}), &[]);
    }
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");

    let mut paged = watcher::watcher(api.clone(), watcher::Config::default().page_size(1)).boxed();
    assert_eq!(initial(&mut paged).await, ["init", "+a", "+b", "+c"]);
    assert!(server.count("list", "configmaps") >= 3, "one list per page");

    let mut streamed = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(initial(&mut streamed).await, ["init", "+a", "+b", "+c"]);
    cm(&server, "d", json!({}), &[]);
    let next = tokio::time::timeout(kubernetes::TIMEOUT, streamed.try_next())
        .await
        .expect("in time")
        .expect("no error")
        .expect("an event");
    assert!(matches!(next, Event::Apply(ref cm) if cm.metadata.name.as_deref() == Some("d")));
}

#[tokio::test]
async fn objects_leaving_a_label_selector_are_deleted_from_the_watch() {
    let server = ApiServer::start();
    cm(&server, "a", json!({"tier": "web"}), &[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let mut w = watcher::watcher(api, watcher::Config::default().labels("tier=web")).boxed();
    assert_eq!(initial(&mut w).await, ["init", "+a"]);
    cm(&server, "a", json!({"tier": "db"}), &[]);
    let event = tokio::time::timeout(kubernetes::TIMEOUT, w.try_next())
        .await
        .expect("in time")
        .expect("no error")
        .expect("an event");
    assert!(matches!(event, Event::Delete(_)), "{event:?}");
    cm(&server, "a", json!({"tier": "web"}), &[]);
    let event = tokio::time::timeout(kubernetes::TIMEOUT, w.try_next())
        .await
        .expect("in time")
        .expect("no error")
        .expect("an event");
    assert!(matches!(event, Event::Apply(_)), "{event:?}");
}
