//! The service's `/metrics`, parsed, for tests that watch counters move.
//!
//! The metrics recorder is process-wide and the tests of one binary run in
//! parallel: a test that asserts exact changes of a series holds
//! [`exclusive`] for its whole run, so no other such test moves the series
//! meanwhile.

use std::collections::BTreeMap;

use catbird_generated::runtime::xrpc::http::StatusCode;
use tokio::sync::{Mutex, MutexGuard};

use super::TestApp;

/// Serialises the tests that assert exact metric changes.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Reads the service's `/metrics`.
pub async fn scrape(app: &TestApp) -> Metrics {
    let response = app.http().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    Metrics::parse(&response.text().await.unwrap())
}

/// The samples of a Prometheus text exposition.
pub struct Metrics {
    pub samples: Vec<Sample>,
}

pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Metrics {
    /// Parses `name{label="value",...} number` lines, skipping comments.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                let value = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                }
            })
            .collect();
        Self { samples }
    }

    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
    }

    /// The value of a counter with exactly these labels; 0 if it has not
    /// been touched yet.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The value of the series `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        self.samples_named(name)
            .find(|sample| sample.labels == labels)
            .map(|sample| sample.value)
    }
}

/// `a="x",b="y \"quoted\""` as a map.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closed label value") {
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                (index, '"') => break index,
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end + 1..];
    }
    labels
}
