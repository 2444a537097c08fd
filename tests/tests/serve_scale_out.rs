//! Several `conductor-writer serve` instances on one database, and deploys
//! that survive the death of the instance running them: three instances on
//! a real PostgreSQL share twelve nodes (one conductor group of their own
//! among them) and one is killed with SIGKILL in the middle of its deploys;
//! one instance on SQLite is killed the same way and restarted. Every node
//! ends `active` with its disk byte for byte right, and no disk was written
//! by two instances at once: the ramdisks (which serve one initiator at a
//! time) saw one login per recorded deploy attempt, in order, and the
//! recorded attempts of each node never overlap.
//!
//! "In the middle" is made certain, not timed: the victim's nodes reach
//! their targets through proxies that stop delivering its bytes after
//! 1 MiB of a 4 MiB image (the victim's session stays up, its deploys
//! unfinished, its claims renewed) until the victim dies.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::workspace_binary;
use integration_tests::postgres::Postgres;
use integration_tests::proxy::{Fault, FaultyProxy};
use integration_tests::ramdisk::Ramdisk;
use integration_tests::serve::{Serve, cmdline, disk, node_toml, root_holds, uuid};
use integration_tests::tgtd::free_port;
use integration_tests::{Rng, output_text, seed};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
/// Client bytes after which a stalling proxy stops delivering: a quarter of the image.
const STALL_AFTER: u64 = 1 << 20;
const LEASE: &str = "2";
const INITIATOR: &str = "iqn.2024-01.org.iscsi-deploy:conductor-writer";

/// One node of a test: its disk, its ramdisk's ports and directory.
struct Node {
    n: u32,
    disk: PathBuf,
    dev: PathBuf,
    dir: PathBuf,
    ports: (u16, u16),
    /// Set for a node whose first deploy is to be caught mid-write.
    proxy: Option<FaultyProxy>,
    ramdisk: Option<Ramdisk>,
}

impl Node {
    fn new(root: &Path, n: u32, stalled: bool) -> Self {
        let (dev, disk) = disk(root, n);
        let dir = root.join(format!("r{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ports = (free_port(), free_port());
        let proxy = stalled.then(|| {
            let upstream = format!("127.0.0.1:{}", ports.0).parse().unwrap();
            FaultyProxy::start(upstream, vec![STALL_AFTER], Fault::Stall, false)
        });
        Node {
            n,
            disk,
            dev,
            dir,
            ports,
            proxy,
            ramdisk: None,
        }
    }

    /// Its `[[node]]`: the target through the proxy, if it has one.
    fn toml(&self, image: &Path, extra: &str) -> String {
        let portal = self.proxy.as_ref().map_or(self.ports.0, |p| p.port);
        node_toml(self.n, image, portal, self.ports.1, extra)
    }

    /// Boot its ramdisk, calling back the instance on `serve_port`.
    fn boot(&mut self, serve_port: u16) {
        let line = cmdline(self.n, serve_port, "vda");
        let extra = ["--dev-root", self.dev.to_str().unwrap(), "--api-attempts", "20"];
        self.ramdisk = Some(Ramdisk::start_at(&self.dir, &line, &extra, self.ports));
    }

    fn stalled(&self) -> bool {
        self.proxy.as_ref().is_some_and(|p| p.faults() == 1)
    }

    /// The initiators of the sessions its target served, in order (a
    /// target serving one initiator at a time logs each login).
    fn logins(&self) -> Vec<String> {
        let log = self.ramdisk.as_ref().unwrap().log();
        log.lines()
            .filter(|l| l.contains("logged in") && l.contains("kind=Normal"))
            .filter_map(|l| l.split("initiator=").nth(1))
            .map(|rest| rest.split(['}', ' ']).next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Its ramdisk exits 0 (done received) and its disk holds the image.
    fn check(&mut self, image: &Path) {
        let ramdisk = self.ramdisk.as_mut().unwrap();
        assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
        assert!(
            root_holds(&self.disk, image),
            "node {}: the disk does not hold the image",
            self.n
        );
    }
}

/// A partition image of random bytes (nothing in it is skipped as zeroes).
fn random_image(dir: &Path) -> PathBuf {
    let image = dir.join("root.raw");
    std::fs::write(&image, Rng(seed("SCALE_OUT_SEED")).bytes(4 * MIB)).unwrap();
    image
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each node's deploy attempts, oldest first: (conductor, outcome, started, finished).
fn attempts(node: &Value) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    node["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                text(&d["conductor"]),
                text(&d["outcome"]),
                text(&d["started_at"]),
                text(&d["finished_at"]),
            )
        })
        .collect()
}

/// What the history must show of every node: attempts one after another
/// (each ended before the next began), and one login at its target per
/// attempt, by that attempt's instance, in the same order.
fn check_history(node: &Node, doc: &Value) {
    let attempts = attempts(doc);
    for pair in attempts.windows(2) {
        assert!(
            !pair[0].3.is_empty() && pair[0].3 <= pair[1].2,
            "node {}: attempts overlap: {attempts:?}",
            node.n
        );
    }
    let expected: Vec<String> = attempts
        .iter()
        .map(|(conductor, ..)| format!("{INITIATOR}:{conductor}"))
        .collect();
    assert_eq!(
        node.logins(),
        expected,
        "node {}: logins at its target against {attempts:?}",
        node.n
    );
    for event in doc["events"].as_array().unwrap() {
        assert!(
            event["conductor"].is_string(),
            "every change names its instance: {event}"
        );
    }
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[test]
fn three_instances_on_postgres_share_twelve_nodes_and_survive_a_sigkill() {
    let pg = Postgres::start();
    let dir = TempDir::new().unwrap();
    let image = random_image(dir.path());
    let names = ["conductor-a", "conductor-b", "conductor-c"];
    let ports = [free_port(), free_port(), free_port()];
    // Node n calls back instance (n - 1) % 3. The victim, b, is caught in
    // the middle of writing the three nodes of the default group whose
    // callbacks it gets (2, 5, 8); c serves the conductor group rack2
    // (10, 11, 12) alone, wherever their ramdisks call back.
    let stalled = |n: u32| [2, 5, 8].contains(&n);
    let rack2 = |n: u32| n >= 10;
    let mut nodes: Vec<Node> = (1..=12).map(|n| Node::new(dir.path(), n, stalled(n))).collect();
    let file: String = nodes
        .iter()
        .map(|node| {
            let extra = if rack2(node.n) {
                "conductor_group = \"rack2\""
            } else {
                ""
            };
            node.toml(&image, extra)
        })
        .collect();
    std::fs::write(dir.path().join("nodes.toml"), file).unwrap();
    // a and b reach the server over TCP, c through its unix socket.
    let urls = [pg.url(), pg.url(), pg.socket_url()];
    let start = |i: usize| {
        let mut args = vec!["--conductor", names[i], "--lease-timeout", LEASE];
        match i {
            // b can run exactly its three deploys: it takes no other work.
            1 => args.extend(["--max-parallel", "3"]),
            2 => args.extend(["--conductor-group", "rack2"]),
            _ => {}
        }
        Serve::start_on(dir.path(), ports[i], &urls[i], &args)
    };
    let a = start(0);
    let mut b = Some(start(1));
    let c = start(2);
    let instance_of = |n: u32| ((n - 1) % 3) as usize;

    // Phase 1: b takes its three nodes and gets stuck 1 MiB into each.
    for node in nodes.iter_mut().filter(|node| stalled(node.n)) {
        node.boot(ports[1]);
    }
    let held_by = |n: u32, who: &str| a.node(&uuid(n))["reservation"] == who;
    wait_until(
        "b holds nodes 2, 5 and 8, each stuck in the middle of its write",
        Duration::from_secs(60),
        || {
            nodes
                .iter()
                .filter(|n| stalled(n.n))
                .all(|n| n.stalled() && held_by(n.n, names[1]))
        },
        || b.as_ref().unwrap().log(),
    );
    // Phase 2: every other ramdisk calls back; all twelve callbacks recorded.
    for node in nodes.iter_mut().filter(|node| !stalled(node.n)) {
        node.boot(ports[instance_of(node.n)]);
    }
    wait_until(
        "every node called back",
        Duration::from_secs(60),
        || (1..=12).all(|n| a.node(&uuid(n))["provision_state"] != "wait call-back"),
        || a.log(),
    );
    // Still in the middle: b holds them, nothing written past the stall.
    for n in [2, 5, 8] {
        let node = a.node(&uuid(n));
        assert_eq!(
            (&node["provision_state"], &node["reservation"]),
            (&"deploying".into(), &names[1].into())
        );
    }
    let victim_log = b.as_ref().unwrap().log();
    assert_eq!(count(&victim_log, "image written"), 0, "{victim_log}");

    // SIGKILL b: a takes its three nodes over once their claims run out.
    b.take().unwrap().stop();
    for n in 1..=12 {
        a.wait_for(&uuid(n), "active", Duration::from_secs(120));
    }
    for node in &mut nodes {
        node.check(&image);
    }

    let (log_a, log_c) = (a.log(), c.log());
    for node in &nodes {
        let doc = a.node(&uuid(node.n));
        check_history(node, &doc);
        let attempts = attempts(&doc);
        let by: Vec<(&str, &str)> = attempts.iter().map(|(c, o, ..)| (c.as_str(), o.as_str())).collect();
        if stalled(node.n) {
            assert_eq!(by, [(names[1], "taken over"), (names[0], "active")], "node {}", node.n);
            let took = doc["events"].as_array().unwrap().iter().find(|e| {
                e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("took the node over, deploying again from the start")
            });
            let took = took.unwrap_or_else(|| panic!("no takeover event: {doc}"));
            assert_eq!(took["conductor"], names[0]);
            assert!(
                took["detail"]
                    .as_str()
                    .unwrap()
                    .contains("conductor conductor-b stopped renewing its claim")
            );
        } else if rack2(node.n) {
            assert_eq!(by, [(names[2], "active")], "node {}: rack2 is c's alone", node.n);
        } else {
            assert_eq!(by.len(), 1, "node {}: {by:?}", node.n);
            assert!(
                [names[0], names[1]].contains(&by[0].0) && by[0].1 == "active",
                "node {}: {by:?}",
                node.n
            );
        }
        assert_eq!(
            doc["conductor"],
            attempts.last().unwrap().0.as_str(),
            "the API names who deployed it"
        );
        assert!(doc["reservation"].is_null(), "nobody holds a deployed node: {doc}");
    }
    // Images are checked once per instance.
    for (log, name) in [(&log_a, names[0]), (&victim_log, names[1]), (&log_c, names[2])] {
        assert_eq!(count(log, "image checked"), 1, "{name}: {log}");
    }
    assert_eq!(count(&log_a, "took the node over"), 3, "{log_a}");

    // The API filters by group and by instance, and status names the instances.
    let rack = a.get("/v1/nodes?conductor_group=rack2&fields=uuid,conductor");
    let rack: BTreeMap<String, String> = rack["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["uuid"].as_str().unwrap().into(),
                n["conductor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(rack.keys().cloned().collect::<Vec<_>>(), [uuid(10), uuid(11), uuid(12)]);
    assert!(rack.values().all(|c| c == names[2]), "{rack:?}");
    let status = Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
        .args(["status", "--url", &c.url("")])
        .output()
        .unwrap();
    let table = output_text(&status);
    assert!(status.status.success(), "{table}");
    assert!(
        table.contains(names[0]) && table.contains(names[2]) && table.contains("CONDUCTOR"),
        "{table}"
    );

    // Ironic's conductor list: the three instances, b no longer alive.
    let listed = a.get("/v1/conductors?detail=True");
    let listed: Vec<(String, String, bool)> = listed["conductors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap().to_owned();
            (text("hostname"), text("conductor_group"), c["alive"].as_bool().unwrap())
        })
        .collect();
    let expected = [(names[0], "", true), (names[1], "", false), (names[2], "rack2", true)];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, g, a)| ((*n).into(), (*g).into(), *a))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        c.get(&format!("/v1/conductors/{}", names[2]))["conductor_group"],
        "rack2"
    );

    // It is all in PostgreSQL: b's three attempts, each taken over.
    let rows = pg.psql("SELECT conductor, outcome, count(*) FROM deploys GROUP BY conductor, outcome ORDER BY 1, 2");
    assert!(rows.lines().any(|l| l == "conductor-b|taken over|3"), "{rows}");
    assert!(!rows.lines().any(|l| l.starts_with("conductor-b|active")), "{rows}");
    let online = pg.psql("SELECT name FROM conductors WHERE online = 1 ORDER BY name");
    assert_eq!(
        online.lines().collect::<Vec<_>>(),
        names,
        "b died without going offline"
    );
}

#[test]
fn a_restarted_instance_on_sqlite_takes_its_own_deploys_over() {
    let dir = TempDir::new().unwrap();
    let image = random_image(dir.path());
    let port = free_port();
    let mut nodes: Vec<Node> = (1..=4).map(|n| Node::new(dir.path(), n, n <= 3)).collect();
    let file: String = nodes.iter().map(|node| node.toml(&image, "")).collect();
    std::fs::write(dir.path().join("nodes.toml"), file).unwrap();
    let args = ["--conductor", "solo", "--lease-timeout", LEASE];
    let serve = Serve::start(dir.path(), port, &args);
    for node in nodes.iter_mut().take(3) {
        node.boot(port);
    }
    wait_until(
        "nodes 1 to 3 stuck in the middle of their writes",
        Duration::from_secs(60),
        || nodes.iter().take(3).all(Node::stalled),
        || serve.log(),
    );
    serve.stop();

    // The same instance again: it waits out its previous run's heartbeat,
    // then takes its deploys over; node 4 waited for its ramdisk all along.
    let serve = Serve::start(dir.path(), port, &args);
    for n in 1..=3 {
        serve.wait_for(&uuid(n), "active", Duration::from_secs(60));
    }
    assert_eq!(serve.node(&uuid(4))["provision_state"], "wait call-back");
    nodes[3].boot(port);
    serve.wait_for(&uuid(4), "active", Duration::from_secs(60));
    let log = serve.log();
    for node in &mut nodes {
        node.check(&image);
        let doc = serve.node(&uuid(node.n));
        check_history(node, &doc);
        let attempts = attempts(&doc);
        let by: Vec<(&str, &str)> = attempts.iter().map(|(c, o, ..)| (c.as_str(), o.as_str())).collect();
        if node.n <= 3 {
            assert_eq!(by, [("solo", "taken over"), ("solo", "active")], "node {}", node.n);
        } else {
            assert_eq!(by, [("solo", "active")]);
        }
    }
    assert_eq!(count(&log, "took the node over"), 3, "{log}");
    assert!(!log.contains("service stopped while the deploy was running"), "{log}");
}
