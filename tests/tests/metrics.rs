//! The Prometheus endpoint of a real server: exact offsets, lag and message age after known
//! traffic, counters, histograms, an error counted, health and readiness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::proto::ProduceRequest;
use strata_client::proto::broker_client::BrokerClient;
use strata_e2e::{Server, free_addr, http_get};

/// A series: metric name and sorted label pairs.
type Series = (String, Vec<(String, String)>);

/// `name{labels} value` lines of the exposition, keyed by name and sorted label pairs.
fn scrape(addr: &str) -> BTreeMap<Series, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<(String, String)> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                labels.sort();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.insert((name, labels), value.parse().expect("number"));
    }
    out
}

fn value(metrics: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> =
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    *metrics
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn scrape_reports_exact_offsets_lag_age_and_errors() {
    let metrics_addr = free_addr();
    let server = Server::start_with(&["--metrics-listen", &metrics_addr]);
    assert_eq!(http_get(&metrics_addr, "/health").0, 200);
    assert_eq!(http_get(&metrics_addr, "/ready"), (200, "ready\n".to_owned()));

    server.cli(&["topic", "create", "m", "--partitions", "2"], "").ok();
    let produced_at = Instant::now();
    let input: String = (0..10).map(|i| format!("r{i}\n")).collect();
    server.cli(&["produce", "m", "--partition", "0"], &input).ok();
    server.cli(&["produce", "m", "--partition", "1"], "a\nb\n").ok();
    server
        .cli(
            &[
                "consume",
                "m",
                "--group",
                "g",
                "--partition",
                "0",
                "--from-beginning",
                "--max-messages",
                "4",
            ],
            "",
        )
        .ok();
    // One failing request: produce to a topic that does not exist.
    let mut raw = BrokerClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let err = raw
        .produce(ProduceRequest {
            topic: "missing".into(),
            partition: 0,
            acks: 0,
            batches: vec![Bytes::from_static(b"x")],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let m = scrape(&metrics_addr);
    let p0 = [("topic", "m"), ("partition", "0")];
    let p1 = [("topic", "m"), ("partition", "1")];
    assert_eq!(value(&m, "strata_partition_log_end_offset", &p0), 10.0);
    assert_eq!(value(&m, "strata_partition_log_end_offset", &p1), 2.0);
    assert_eq!(value(&m, "strata_partition_log_start_offset", &p0), 0.0);
    assert!(value(&m, "strata_partition_size_bytes", &p0) > 0.0);
    assert_eq!(value(&m, "strata_produce_records_total", &p0), 10.0);
    assert_eq!(value(&m, "strata_produce_records_total", &p1), 2.0);
    assert!(value(&m, "strata_produce_bytes_total", &p0) > 10.0);
    assert!(value(&m, "strata_fetch_records_total", &p0) >= 4.0);
    let g0 = [("group", "g"), ("topic", "m"), ("partition", "0")];
    assert_eq!(value(&m, "strata_consumer_group_committed_offset", &g0), 4.0);
    assert_eq!(value(&m, "strata_consumer_group_lag", &g0), 6.0);
    let age = value(&m, "strata_consumer_group_oldest_unconsumed_age_seconds", &g0);
    let upper = produced_at.elapsed().as_secs_f64() + 0.5;
    assert!((1.0..=upper).contains(&age), "age {age} s, expected in [1, {upper}]");
    assert_eq!(
        value(&m, "strata_request_errors_total", &[("rpc", "produce"), ("code", "NotFound")]),
        1.0
    );
    // The producer sends ProduceMany (every partition ready for a broker in one request).
    let produce_requests =
        |rpc| value(&m, "strata_request_duration_seconds_count", &[("rpc", rpc)]);
    assert!(produce_requests("produce") + produce_requests("produce_many") >= 3.0);
    assert!(value(&m, "strata_fsync_duration_seconds_count", &[]) >= 2.0);

    // The CLI shows the same lag and the age.
    let rows = server.cli(&["group", "describe", "g", "--format", "json"], "").ok().json_lines();
    assert_eq!(rows[0]["lag"], 6);
    assert!(rows[0]["oldest_unconsumed_age_ms"].as_u64().unwrap() >= 1000);
    let status = server.cli(&["cluster", "status", "--format", "json"], "").ok().json_lines();
    assert_eq!(status[0]["kind"], "node");
    assert!(status[0]["produce_records_per_s"].as_f64().unwrap() > 0.0, "{status:?}");

    // Consumed to the end: lag and age drop to 0.
    server
        .cli(&["consume", "m", "--group", "g", "--partition", "0", "--max-messages", "6"], "")
        .ok();
    let m = scrape(&metrics_addr);
    assert_eq!(value(&m, "strata_consumer_group_lag", &g0), 0.0);
    assert_eq!(value(&m, "strata_consumer_group_oldest_unconsumed_age_seconds", &g0), 0.0);
}
