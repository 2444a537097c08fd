//! What `GET /metrics` tells a Prometheus server: deploys by result, bytes
//! written, how long deploys take, nodes by provision state, and the
//! callbacks and API requests refused.
//!
//! Counters live in memory and start from zero with the process, as
//! Prometheus expects of a counter; the node gauges are read from the
//! database at each scrape. The text is the exposition format 0.0.4, written
//! by hand: a few fixed families need no library.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::ProvisionState;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the deploy duration buckets: from a small
/// image on a fast network to Ironic's 30 minute callback timeout and past it.
const DURATION_BUCKETS: [f64; 11] = [
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// Why a ramdisk callback was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A wrong or missing deploy key.
    WrongKey,
    /// A body that is not the callback's JSON.
    Malformed,
    UnknownNode,
    /// The right key, but the node does not wait for that callback.
    WrongState,
}

impl Rejection {
    const ALL: [Self; 4] = [Self::WrongKey, Self::Malformed, Self::UnknownNode, Self::WrongState];

    fn label(self) -> &'static str {
        match self {
            Self::WrongKey => "wrong_key",
            Self::Malformed => "malformed",
            Self::UnknownNode => "unknown_node",
            Self::WrongState => "wrong_state",
        }
    }
}

/// A deploy's end, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployResult {
    Succeeded,
    Failed,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, then the overflow.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_zeroed: AtomicU64,
    rejected: [AtomicU64; 4],
    unauthorized: AtomicU64,
    durations: Mutex<[Histogram; 2]>,
}

impl Metrics {
    /// A deploy ended after `seconds` (from its callback), having sent
    /// `bytes_sent` bytes of data and zeroed `bytes_zeroed` more.
    pub fn deploy_finished(&self, result: DeployResult, seconds: f64, bytes_sent: u64, bytes_zeroed: u64) {
        let (counter, slot) = match result {
            DeployResult::Succeeded => (&self.succeeded, 0),
            DeployResult::Failed => (&self.failed, 1),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes_sent, Ordering::Relaxed);
        self.bytes_zeroed.fetch_add(bytes_zeroed, Ordering::Relaxed);
        let mut durations = self.durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let histogram = &mut durations[slot];
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        histogram.counts[bucket] += 1;
        histogram.sum += seconds;
    }

    pub fn callback_rejected(&self, why: Rejection) {
        let index = Rejection::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A request without valid credentials.
    pub fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with `nodes` (how many nodes are in each state).
    #[must_use]
    pub fn render(&self, nodes: &[(ProvisionState, u64)]) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "conductor_writer_deploys_total",
            "counter",
            "Deploys ended since the service started, by result.",
        );
        for (result, counter) in [("succeeded", &self.succeeded), ("failed", &self.failed)] {
            let _ = writeln!(
                out,
                "conductor_writer_deploys_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        for (name, help, counter) in [
            (
                "conductor_writer_deploy_bytes_sent_total",
                "Bytes of image and file system data written to node disks by ended deploys.",
                &self.bytes_sent,
            ),
            (
                "conductor_writer_deploy_bytes_zeroed_total",
                "Bytes of node disks zeroed (WRITE SAME or UNMAP, not sent) by ended deploys.",
                &self.bytes_zeroed,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        self.render_durations(&mut out);
        family(
            &mut out,
            "conductor_writer_nodes",
            "gauge",
            "Nodes in each provision state.",
        );
        for state in ProvisionState::ALL {
            let count = nodes.iter().filter(|(s, _)| *s == state).map(|(_, n)| n).sum::<u64>();
            let _ = writeln!(
                out,
                "conductor_writer_nodes{{provision_state=\"{}\"}} {count}",
                state.as_str()
            );
        }
        family(
            &mut out,
            "conductor_writer_callbacks_rejected_total",
            "counter",
            "Ramdisk callbacks refused without changing their node, by reason.",
        );
        for (why, counter) in Rejection::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "conductor_writer_callbacks_rejected_total{{reason=\"{}\"}} {}",
                why.label(),
                counter.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "conductor_writer_api_unauthorized_total",
            "counter",
            "API requests refused for missing or wrong credentials.",
        );
        let _ = writeln!(
            out,
            "conductor_writer_api_unauthorized_total {}",
            self.unauthorized.load(Ordering::Relaxed)
        );
        out
    }

    fn render_durations(&self, out: &mut String) {
        let name = "conductor_writer_deploy_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Seconds from a deploy's callback to its end (active or deploy failed).",
        );
        let durations = self.durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (result, histogram) in ["succeeded", "failed"].iter().zip(durations.iter()) {
            let mut cumulative = 0;
            for (bound, count) in DURATION_BUCKETS.iter().zip(&histogram.counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{result=\"{result}\",le=\"{bound:?}\"}} {cumulative}"
                );
            }
            let total = cumulative + histogram.counts[DURATION_BUCKETS.len()];
            let _ = writeln!(out, "{name}_bucket{{result=\"{result}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "{name}_sum{{result=\"{result}\"}} {:?}", histogram.sum);
            let _ = writeln!(out, "{name}_count{{result=\"{result}\"}} {total}");
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn counters_and_the_histogram_add_up() {
        let metrics = Metrics::default();
        metrics.deploy_finished(DeployResult::Succeeded, 3.5, 100, 7);
        metrics.deploy_finished(DeployResult::Succeeded, 45.0, 50, 0);
        metrics.deploy_finished(DeployResult::Failed, 9000.0, 0, 0);
        for _ in 0..3 {
            metrics.callback_rejected(Rejection::WrongKey);
        }
        metrics.callback_rejected(Rejection::WrongState);
        metrics.unauthorized();
        let text = metrics.render(&[(ProvisionState::Active, 2), (ProvisionState::WaitCallBack, 1)]);
        assert_eq!(
            value(&text, "conductor_writer_deploys_total{result=\"succeeded\"}"),
            "2"
        );
        assert_eq!(value(&text, "conductor_writer_deploys_total{result=\"failed\"}"), "1");
        assert_eq!(value(&text, "conductor_writer_deploy_bytes_sent_total"), "150");
        assert_eq!(value(&text, "conductor_writer_deploy_bytes_zeroed_total"), "7");
        let bucket = "conductor_writer_deploy_duration_seconds_bucket{result=\"succeeded\",le=";
        assert_eq!(value(&text, &format!("{bucket}\"5.0\"}}")), "1");
        assert_eq!(value(&text, &format!("{bucket}\"30.0\"}}")), "1");
        assert_eq!(value(&text, &format!("{bucket}\"60.0\"}}")), "2");
        assert_eq!(value(&text, &format!("{bucket}\"+Inf\"}}")), "2");
        let failed = "conductor_writer_deploy_duration_seconds_bucket{result=\"failed\",le=";
        assert_eq!(value(&text, &format!("{failed}\"7200.0\"}}")), "0");
        assert_eq!(value(&text, &format!("{failed}\"+Inf\"}}")), "1");
        assert_eq!(
            value(
                &text,
                "conductor_writer_deploy_duration_seconds_sum{result=\"succeeded\"}"
            ),
            "48.5"
        );
        assert_eq!(
            value(
                &text,
                "conductor_writer_deploy_duration_seconds_count{result=\"failed\"}"
            ),
            "1"
        );
        assert_eq!(value(&text, "conductor_writer_nodes{provision_state=\"active\"}"), "2");
        assert_eq!(
            value(&text, "conductor_writer_nodes{provision_state=\"wait call-back\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "conductor_writer_nodes{provision_state=\"deploy failed\"}"),
            "0"
        );
        assert_eq!(
            value(&text, "conductor_writer_callbacks_rejected_total{reason=\"wrong_key\"}"),
            "3"
        );
        assert_eq!(
            value(
                &text,
                "conductor_writer_callbacks_rejected_total{reason=\"wrong_state\"}"
            ),
            "1"
        );
        assert_eq!(value(&text, "conductor_writer_api_unauthorized_total"), "1");
        // Every sample follows its family's HELP and TYPE lines.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
