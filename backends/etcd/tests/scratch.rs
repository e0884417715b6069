mod support;
use etcd_client::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn scratch() {
    let etcd = support::Etcd::start().unwrap();
    let r = etcd.put("/a/b", "hello");
    println!("put rev {r}; rev now {}", etcd.revision());
    let mut c = Client::connect([etcd.url()], None).await.unwrap();
    let g = c
        .get("/a", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    println!(
        "{:?}",
        g.kvs()
            .iter()
            .map(|kv| (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string()
            ))
            .collect::<Vec<_>>()
    );
    // down endpoint
    let port = support::free_port();
    let t = Instant::now();
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    let mut c = Client::connect([format!("http://127.0.0.1:{port}")], Some(opts))
        .await
        .unwrap();
    println!("connect ok after {:?}", t.elapsed());
    let r = tokio::time::timeout(Duration::from_secs(6), c.get("/a", None)).await;
    println!(
        "get on down after {:?}: {:?}",
        t.elapsed(),
        r.map(|x| x.map(|_| ()))
    );
    // blackhole: 10.255.255.1 is not allowed; skip
}
