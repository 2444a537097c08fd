//! The store against in-memory and on-disk SQLite databases: transitions,
//! callbacks recorded as work, claims, leases and takeovers, instances,
//! migrations. (`tests/tests/serve_scale_out.rs` runs the same store on a
//! real PostgreSQL through the service.)

use std::time::Duration;

use super::ProvisionState::*;
use super::*;
use crate::service::nodes::NodeSpec;

const A: &str = "11111111-1111-4111-8111-111111111111";
const B: &str = "22222222-2222-4222-8222-222222222222";
const C: &str = "33333333-3333-4333-8333-333333333333";
const D: &str = "44444444-4444-4444-8444-444444444444";
const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(50);

fn spec(uuid: &str, name: Option<&str>) -> NodeSpec {
    let text = format!("[[node]]\nuuid = {uuid:?}\ndeploy_key = \"0123456789abcdef\"\nimage = \"/i.img\"\n");
    let mut node = super::super::nodes::parse(&text, Path::new("t.toml"))
        .unwrap()
        .remove(0);
    node.name = name.map(Into::into);
    node
}

fn grouped(uuid: &str, group: &str) -> NodeSpec {
    let mut node = spec(uuid, None);
    node.conductor_group = group.into();
    node
}

fn me(name: &str, group: &str) -> Conductor {
    Conductor {
        name: name.into(),
        group: group.into(),
        hostname: "host".into(),
        incarnation: uuid::Uuid::new_v4().to_string(),
    }
}

fn write_work(address: &str) -> Work {
    Work::Write {
        address: address.into(),
        iqn: "iqn.x".into(),
        port: 3260,
    }
}

async fn state(store: &Store, uuid: &str) -> (ProvisionState, Option<String>) {
    let node = store.node(uuid).await.unwrap().unwrap();
    (node.provision_state, node.last_error)
}

/// A callback for `uuid`, claimed by `by` at once.
async fn claimed(store: &Store, uuid: &str, by: &Conductor, lease: Duration) -> Claim {
    store
        .accept_callback(uuid, &write_work("10.0.0.5"), "callback", by, Some(lease))
        .await
        .unwrap()
        .expect("claimed where it arrived")
}

fn figures() -> DeployRow {
    DeployRow {
        bytes_sent: 5 << 30,
        bytes_zeroed: 1 << 20,
        image_bytes: 7 << 30,
        seconds: 12.5,
        mib_per_second: 409.6,
        root_uuid: Some("c0ffee00-0000-4000-8000-000000000000".into()),
        disk_identifier: Some("0x1234abcd".into()),
        ..DeployRow::default()
    }
}

#[test]
fn provision_state_strings_are_ironics() {
    for (state, text) in [
        (WaitCallBack, "wait call-back"),
        (Deploying, "deploying"),
        (Active, "active"),
    ] {
        assert_eq!((state.as_str(), ProvisionState::parse(text)), (text, Some(state)));
        assert_eq!(serde_json::to_string(&state).unwrap(), format!("{text:?}"));
    }
    assert_eq!(ProvisionState::parse("deploy failed"), Some(DeployFailed));
    assert_eq!(ProvisionState::parse("DEPLOYWAIT"), None);
    assert_eq!(
        Location::parse("postgresql://u:p@db/farm"),
        Location::Postgres("postgresql://u:p@db/farm".into())
    );
    assert_eq!(Location::parse("state.sqlite"), Location::Sqlite("state.sqlite".into()));
    assert_eq!(
        Location::parse("postgres://u:p@db/farm").to_string(),
        "postgres://u:***@db/farm"
    );
}

#[tokio::test]
async fn sync_adds_nodes_keeps_their_specs_and_drops_removed_ones() {
    let store = Store::open_in_memory().await.unwrap();
    let log = store
        .sync_nodes(&[spec(B, None), spec(A, Some("rack1-node1"))], "c1")
        .await
        .unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains(A) && l.contains("rack1-node1") && l.contains("added")),
        "{log:?}"
    );
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.uuid.as_str()).collect::<Vec<_>>(), [A, B]);
    assert!(
        nodes
            .iter()
            .all(|n| n.provision_state == WaitCallBack && n.last_error.is_none())
    );
    assert_eq!(nodes[0].spec.as_ref().unwrap(), &spec(A, Some("rack1-node1")));
    let added = store.events(A).await.unwrap().remove(0);
    assert_eq!((added.to_state, added.conductor.as_deref()), (WaitCallBack, Some("c1")));
    assert!(store.node(C).await.unwrap().is_none());
    assert!(matches!(store.events(C).await, Err(StoreError::UnknownNode(_))));
    assert!(matches!(
        store.transition(C, Active, None, "x", "c1").await,
        Err(StoreError::UnknownNode(_))
    ));
    // Found by UUID in any case, or by name.
    assert_eq!(store.find(&A.to_uppercase()).await.unwrap().unwrap().0.uuid, A);
    assert_eq!(store.find("rack1-node1").await.unwrap().unwrap().1.uuid, A);
    // The same file again changes nothing; a changed entry is taken; a
    // node left out stays (history) but is no longer found or deployed.
    let same = [spec(A, Some("rack1-node1")), spec(B, None)];
    assert_eq!(store.sync_nodes(&same, "c2").await.unwrap(), Vec::<String>::new());
    let log = store.sync_nodes(&[grouped(A, "rack2")], "c2").await.unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].contains(B) && log[0].contains("not in the nodes file"),
        "{log:?}"
    );
    assert!(log[1].contains(A) && log[1].contains("changed"), "{log:?}");
    let a = store.node(A).await.unwrap().unwrap();
    assert_eq!((a.conductor_group.as_str(), a.name), ("rack2", None));
    assert!(store.find(B).await.unwrap().is_none());
    assert!(store.node(B).await.unwrap().unwrap().spec.is_none());
    assert_eq!(store.events(A).await.unwrap().len(), 1);
}

#[tokio::test]
async fn transitions_write_events_in_order_and_keep_last_error_by_the_rules() {
    let store = Store::open_in_memory().await.unwrap();
    store.sync_nodes(&[spec(A, None)], "c").await.unwrap();
    store
        .transition(A, Deploying, None, "callback from 10.0.0.5", "c")
        .await
        .unwrap();
    store
        .transition(A, DeployFailed, Some("login refused"), "deploy failed", "c")
        .await
        .unwrap();
    assert_eq!(state(&store, A).await, (DeployFailed, Some("login refused".into())));
    let failed_since = store.node(A).await.unwrap().unwrap().state_since;
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .transition(A, DeployFailed, None, "still failed", "c")
        .await
        .unwrap();
    let again = store.node(A).await.unwrap().unwrap();
    assert_eq!(again.state_since, failed_since, "the same state keeps its start");
    assert!(again.updated_at > again.created_at);
    assert_eq!(
        state(&store, A).await,
        (DeployFailed, Some("login refused".into())),
        "None keeps in deploy failed"
    );
    store.transition(A, WaitCallBack, None, "retry", "other").await.unwrap();
    assert!(store.node(A).await.unwrap().unwrap().state_since > failed_since);
    assert_eq!(
        state(&store, A).await,
        (WaitCallBack, None),
        "None clears on wait call-back"
    );
    store
        .transition(A, Deploying, Some("warning kept"), "callback", "c")
        .await
        .unwrap();
    assert_eq!(state(&store, A).await, (Deploying, Some("warning kept".into())));
    store.transition(A, Active, None, "done", "c").await.unwrap();
    assert_eq!(state(&store, A).await, (Active, None));
    let events = store.events(A).await.unwrap();
    let path: Vec<_> = events
        .iter()
        .map(|e| (e.from_state, e.to_state, e.detail.as_str(), e.conductor.as_deref()))
        .collect();
    assert_eq!(
        path,
        [
            (None, WaitCallBack, "added from the nodes file", Some("c")),
            (Some(WaitCallBack), Deploying, "callback from 10.0.0.5", Some("c")),
            (Some(Deploying), DeployFailed, "deploy failed", Some("c")),
            (Some(DeployFailed), DeployFailed, "still failed", Some("c")),
            (Some(DeployFailed), WaitCallBack, "retry", Some("other")),
            (Some(WaitCallBack), Deploying, "callback", Some("c")),
            (Some(Deploying), Active, "done", Some("c")),
        ]
    );
}

#[tokio::test]
async fn a_callback_is_claimed_where_it_arrives_and_ends_once() {
    let store = Store::open_in_memory().await.unwrap();
    store.sync_nodes(&[spec(A, None)], "c1").await.unwrap();
    let c1 = me("c1", "");
    let claim = claimed(&store, A, &c1, LONG).await;
    assert_eq!(
        (claim.work.clone(), claim.took_over.clone()),
        (write_work("10.0.0.5"), None)
    );
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!(node.provision_state, Deploying);
    assert_eq!(
        (node.reservation.as_deref(), node.conductor.as_deref()),
        (Some("c1"), Some("c1"))
    );
    assert!(claims::held(&node));
    let open = store.deploys(A).await.unwrap().remove(0);
    assert_eq!(
        (open.id, open.conductor.as_deref(), open.address.as_deref()),
        (claim.deploy_id, Some("c1"), Some("10.0.0.5"))
    );
    // A second callback while it deploys is refused and names the holder.
    let again = store
        .accept_callback(A, &write_work("10.0.0.6"), "x", &c1, Some(LONG))
        .await;
    assert!(
        matches!(&again, Err(StoreError::NotInState { state: Deploying, holder: Some(h), .. }) if h == "c1"),
        "{again:?}"
    );
    assert!(store.renew(&claim, LONG, (10, 100)).await.unwrap());
    assert_eq!(store.node(A).await.unwrap().unwrap().progress, Some((10, 100)));
    let finish = Finish::Active {
        figures: Some(figures()),
        detail: "done sent".into(),
    };
    store.finish(&claim, finish.clone(), "c1").await.unwrap();
    assert!(matches!(
        store.finish(&claim, finish, "c1").await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(!store.renew(&claim, LONG, (0, 0)).await.unwrap());
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!(
        (node.provision_state, node.reservation, node.progress),
        (Active, None, None)
    );
    assert_eq!(node.conductor.as_deref(), Some("c1"), "who deployed it stays");
    let row = store.deploys(A).await.unwrap().remove(0);
    assert_eq!(
        (
            row.outcome.as_deref(),
            row.bytes_sent,
            row.bytes_zeroed,
            row.image_bytes
        ),
        (Some("active"), 5 << 30, 1 << 20, 7 << 30)
    );
    assert!(row.finished_at.is_some() && row.started_at.ends_with("+00:00"));
    assert_eq!((row.seconds, row.root_uuid), (12.5, figures().root_uuid));
}

#[tokio::test]
async fn work_of_another_conductor_group_waits_for_that_group() {
    let store = Store::open_in_memory().await.unwrap();
    store
        .sync_nodes(&[grouped(A, "rack2"), spec(B, None)], "c1")
        .await
        .unwrap();
    let (plain, rack2) = (me("c1", ""), me("c2", "rack2"));
    let kept = store
        .accept_callback(A, &write_work("10.0.0.5"), "callback", &plain, Some(LONG))
        .await
        .unwrap();
    assert!(kept.is_none(), "recorded, not claimed, by an instance of another group");
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!((node.provision_state, node.reservation), (Deploying, None));
    assert!(store.claim_next(&plain, LONG).await.unwrap().is_none());
    let claim = store
        .claim_next(&rack2, LONG)
        .await
        .unwrap()
        .expect("its group's instance claims it");
    assert_eq!((claim.uuid.as_str(), claim.took_over.as_ref()), (A, None));
    assert!(store.claim_next(&rack2, LONG).await.unwrap().is_none(), "held");
    assert_eq!(store.deploys(A).await.unwrap()[0].conductor.as_deref(), Some("c2"));
}

#[tokio::test]
async fn a_claim_that_runs_out_is_taken_over_and_the_old_holder_records_nothing() {
    let store = Store::open_in_memory().await.unwrap();
    store.sync_nodes(&[spec(A, None)], "a").await.unwrap();
    let (a, b) = (me("a", ""), me("b", ""));
    let first = claimed(&store, A, &a, SHORT).await;
    assert!(
        store.claim_next(&b, LONG).await.unwrap().is_none(),
        "held until the lease runs out"
    );
    tokio::time::sleep(SHORT * 3).await;
    let second = store.claim_next(&b, LONG).await.unwrap().expect("taken over");
    assert_eq!(
        (second.took_over.as_deref(), second.work.clone()),
        (Some("a"), first.work.clone())
    );
    assert_ne!(second.deploy_id, first.deploy_id);
    assert!(!store.renew(&first, LONG, (1, 2)).await.unwrap());
    let late = Finish::Failed {
        error: "late".into(),
        figures: None,
    };
    assert!(matches!(
        store.finish(&first, late, "a").await,
        Err(StoreError::ClaimLost(_))
    ));
    let deploys = store.deploys(A).await.unwrap();
    assert_eq!(deploys.len(), 2);
    assert_eq!(
        (deploys[0].outcome.as_deref(), deploys[0].conductor.as_deref()),
        (Some("taken over"), Some("a"))
    );
    let why = deploys[0].error.as_deref().unwrap();
    assert!(
        why.contains("conductor a stopped renewing its claim") && why.contains("b deploys the node again"),
        "{why}"
    );
    assert_eq!(
        (deploys[1].finished_at.as_ref(), deploys[1].conductor.as_deref()),
        (None, Some("b"))
    );
    let finish = Finish::Active {
        figures: Some(figures()),
        detail: "done sent".into(),
    };
    store.finish(&second, finish, "b").await.unwrap();
    let events = store.events(A).await.unwrap();
    let path: Vec<_> = events.iter().map(|e| (e.to_state, e.conductor.as_deref())).collect();
    assert_eq!(
        path,
        [
            (WaitCallBack, Some("a")),
            (Deploying, Some("a")),
            (Deploying, Some("b")),
            (Active, Some("b"))
        ]
    );
    assert!(
        events[2]
            .detail
            .contains("b took the node over, deploying again from the start"),
        "{}",
        events[2].detail
    );

    // A released claim (its instance stopped cleanly) is taken at once.
    store
        .transition_if(
            A,
            &[Active],
            WaitCallBack,
            None,
            "rebuild",
            ConfigDriveChange::Keep,
            "b",
        )
        .await
        .unwrap();
    let third = claimed(&store, A, &b, LONG).await;
    store.release(&third).await.unwrap();
    let fourth = store.claim_next(&a, LONG).await.unwrap().expect("released");
    assert_eq!(fourth.took_over.as_deref(), Some("b"));
    let why = store.deploys(A).await.unwrap()[2].error.clone().unwrap();
    assert!(why.contains("conductor b released the node when it stopped"), "{why}");
}

#[tokio::test]
async fn the_boot_loader_wait_survives_a_restart_and_any_instance_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("state.sqlite"));
    let (a, b) = (me("a", ""), me("b", ""));
    let deploy_id = {
        let store = Store::open(&location).await.unwrap();
        store.sync_nodes(&[spec(A, None), spec(B, None)], "a").await.unwrap();
        let claim = claimed(&store, A, &a, LONG).await;
        let wait = Finish::AwaitBootLoader { figures: figures() };
        store.finish(&claim, wait, "a").await.unwrap();
        let claim = claimed(&store, B, &a, LONG).await;
        store
            .finish(&claim, Finish::AwaitBootLoader { figures: figures() }, "a")
            .await
            .unwrap();
        claim.deploy_id
    };
    let store = Store::open(&location).await.unwrap();
    assert_eq!(
        store.sync_nodes(&[spec(A, None), spec(B, None)], "b").await.unwrap(),
        Vec::<String>::new()
    );
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!((node.provision_state, node.reservation), (WaitCallBack, None));
    // Not a second pass_deploy_info: this node waits for its boot loader.
    let refused = store
        .accept_callback(A, &write_work("10.0.0.5"), "x", &b, Some(LONG))
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::NotInState {
                state: WaitCallBack,
                ..
            })
        ),
        "{refused:?}"
    );
    let done = store
        .accept_callback(A, &Work::BootLoaderDone, "boot loader installed", &b, Some(LONG))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(done.address, "10.0.0.5", "done goes where the image went");
    let active = Finish::Active {
        figures: None,
        detail: "boot loader installed; done sent".into(),
    };
    store.finish(&done, active, "b").await.unwrap();
    let row = store.deploys(A).await.unwrap().remove(0);
    assert_eq!(
        (row.outcome.as_deref(), row.bytes_sent),
        (Some("active"), 5 << 30),
        "figures kept"
    );
    let states: Vec<_> = store.events(A).await.unwrap().iter().map(|e| e.to_state).collect();
    assert_eq!(states, [WaitCallBack, Deploying, WaitCallBack, Deploying, Active]);
    // The other one's boot loader failed; a stale deploy id changes nothing.
    let stale = store
        .fail_boot_loader_wait(B, Some(deploy_id + 100), "x", "x", "b")
        .await;
    assert!(matches!(stale, Err(StoreError::NotInState { .. })), "{stale:?}");
    store
        .fail_boot_loader_wait(B, Some(deploy_id), "grub failed", "boot loader", "b")
        .await
        .unwrap();
    assert_eq!(state(&store, B).await, (DeployFailed, Some("grub failed".into())));
    let row = store.deploys(B).await.unwrap().remove(0);
    assert_eq!(
        (row.outcome.as_deref(), row.error.as_deref()),
        (Some("deploy failed"), Some("grub failed"))
    );
}

#[tokio::test]
async fn a_restarted_instance_takes_its_own_deploys_over_instead_of_failing_them() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("state.sqlite"));
    let a = me("a", "");
    {
        let store = Store::open(&location).await.unwrap();
        store.sync_nodes(&[spec(A, None), spec(B, None)], "a").await.unwrap();
        claimed(&store, A, &a, SHORT).await;
        // B: waiting for its ramdisk, untouched by the restart.
    }
    let store = Store::open(&location).await.unwrap();
    let restarted = me("a", "");
    assert!(
        store
            .sync_nodes(&[spec(A, None), spec(B, None)], "a")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&store, A).await.0, Deploying, "not failed");
    tokio::time::sleep(SHORT * 3).await;
    let claim = store.claim_next(&restarted, LONG).await.unwrap().expect("resumed");
    assert_eq!((claim.uuid.as_str(), claim.took_over.as_deref()), (A, Some("a")));
    assert_eq!(state(&store, B).await.0, WaitCallBack);
}

#[tokio::test]
async fn work_without_its_callback_or_its_node_fails_instead_of_being_claimed() {
    let store = Store::open_in_memory().await.unwrap();
    store.sync_nodes(&[spec(A, None), spec(B, None)], "a").await.unwrap();
    // A: deploying in a database of an older version (no work recorded).
    store.transition(A, Deploying, None, "callback", "old").await.unwrap();
    // B: called back, then removed from the nodes file.
    let a = me("a", "");
    store
        .accept_callback(B, &write_work("10.0.0.5"), "callback", &me("x", "other"), Some(LONG))
        .await
        .unwrap();
    store.sync_nodes(&[spec(A, None)], "a").await.unwrap();
    assert!(store.claim_next(&a, LONG).await.unwrap().is_none());
    let (st, error) = state(&store, A).await;
    assert_eq!(st, DeployFailed);
    assert!(error.unwrap().contains("did not keep the callback; retry the deploy"));
    assert!(store.claim_next(&a, LONG).await.unwrap().is_none());
    let (st, error) = state(&store, B).await;
    assert_eq!(st, DeployFailed);
    assert!(error.unwrap().contains("no longer in the nodes file"));
}

#[tokio::test]
async fn waits_past_the_callback_timeout_fail() {
    let store = Store::open_in_memory().await.unwrap();
    store
        .sync_nodes(&[spec(A, None), grouped(B, "rack9"), spec(C, None), spec(D, None)], "a")
        .await
        .unwrap();
    let a = me("a", "");
    // B: its callback came, but no instance of rack9 runs. C: held. D: image written.
    store
        .accept_callback(B, &write_work("10.0.0.5"), "callback", &a, Some(LONG))
        .await
        .unwrap();
    let c = claimed(&store, C, &a, LONG).await;
    let d = claimed(&store, D, &a, LONG).await;
    store
        .finish(&d, Finish::AwaitBootLoader { figures: figures() }, "a")
        .await
        .unwrap();
    assert!(store.expire(LONG, "a").await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = store.expire(Duration::from_millis(10), "a").await.unwrap();
    let uuids: Vec<_> = expired.iter().map(|e| (e.uuid.as_str(), e.closed_deploy)).collect();
    assert_eq!(uuids, [(A, false), (B, false), (D, true)]);
    assert!(
        expired[0]
            .error
            .starts_with("Timeout reached while waiting for callback")
    );
    assert!(
        expired[1].error.contains("--conductor-group rack9"),
        "{}",
        expired[1].error
    );
    assert_eq!(state(&store, C).await.0, Deploying, "held nodes are their holder's");
    assert_eq!(
        store.deploys(D).await.unwrap()[0].outcome.as_deref(),
        Some("deploy failed")
    );
    // A claim given up counts from then, not from its callback long ago.
    store.release(&c).await.unwrap();
    let timeout = Duration::from_millis(300);
    assert!(store.expire(timeout, "a").await.unwrap().is_empty());
    tokio::time::sleep(timeout + SHORT).await;
    let expired = store.expire(timeout, "a").await.unwrap();
    assert_eq!(
        (expired.len(), expired[0].uuid.as_str(), expired[0].closed_deploy),
        (1, C, true)
    );
}

#[tokio::test]
async fn an_instance_name_is_one_process_at_a_time() {
    let store = Store::open_in_memory().await.unwrap();
    let first = me("c1", "");
    assert_eq!(store.register(&first, SHORT).await.unwrap(), Registered::Yes);
    let second = me("c1", "");
    assert!(matches!(
        store.register(&second, SHORT).await.unwrap(),
        Registered::Busy { .. }
    ));
    assert!(store.heartbeat(&first).await.unwrap());
    tokio::time::sleep(SHORT * 3).await;
    assert_eq!(
        store.register(&second, SHORT).await.unwrap(),
        Registered::Yes,
        "the first fell silent"
    );
    assert!(
        !store.heartbeat(&first).await.unwrap(),
        "the first learns its name is taken"
    );
    store.unregister(&second).await.unwrap();
    assert_eq!(
        store.register(&me("c1", ""), SHORT).await.unwrap(),
        Registered::Yes,
        "offline: free at once"
    );
    let all = store.conductors(LONG).await.unwrap();
    assert_eq!((all.len(), all[0].name.as_str(), all[0].alive), (1, "c1", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn two_processes_on_one_file_never_claim_a_node_twice() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("state.sqlite"));
    let uuids: Vec<String> = (0..24).map(|i| format!("aaaaaaaa-0000-4000-8000-{i:012}")).collect();
    let specs: Vec<NodeSpec> = uuids.iter().map(|u| spec(u, None)).collect();
    let setup = Store::open(&location).await.unwrap();
    setup.sync_nodes(&specs, "setup").await.unwrap();
    for uuid in &uuids {
        let (work, other) = (write_work("10.0.0.5"), me("x", "other"));
        setup
            .accept_callback(uuid, &work, "callback", &other, None)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for name in ["p1", "p2", "p3"] {
        let location = location.clone();
        tasks.push(tokio::spawn(async move {
            // Its own connection, as another process would have.
            let store = Store::open(&location).await.unwrap();
            let conductor = me(name, "");
            let mut got = Vec::new();
            while let Some(claim) = store.claim_next(&conductor, LONG).await.unwrap() {
                got.push(claim.uuid);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all, uuids, "each node claimed exactly once");
}

#[tokio::test]
async fn transition_if_changes_state_and_config_drive_together_or_nothing() {
    let store = Store::open_in_memory().await.unwrap();
    store.sync_nodes(&[spec(A, None)], "c").await.unwrap();
    let refused = store
        .transition_if(
            A,
            &[Active],
            WaitCallBack,
            None,
            "rebuild",
            ConfigDriveChange::Set("x"),
            "c",
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::NotInState {
                state: WaitCallBack,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        store.configdrive(A).await.unwrap(),
        None,
        "a refused change sets nothing"
    );
    assert_eq!(store.events(A).await.unwrap().len(), 1);
    let from = store
        .transition_if(
            A,
            &[WaitCallBack],
            Available,
            None,
            "deleted",
            ConfigDriveChange::Set("H4sI"),
            "c",
        )
        .await
        .unwrap();
    assert_eq!(from, WaitCallBack);
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!((node.provision_state, node.has_configdrive), (Available, true));
    assert_eq!(store.configdrive(A).await.unwrap().as_deref(), Some("H4sI"));
    store
        .transition_if(
            A,
            &[Available],
            WaitCallBack,
            None,
            "active",
            ConfigDriveChange::Keep,
            "c",
        )
        .await
        .unwrap();
    assert_eq!(store.configdrive(A).await.unwrap().as_deref(), Some("H4sI"), "kept");
    store
        .transition_if(
            A,
            &[WaitCallBack],
            Available,
            None,
            "deleted",
            ConfigDriveChange::Clear,
            "c",
        )
        .await
        .unwrap();
    assert!(!store.node(A).await.unwrap().unwrap().has_configdrive);
    assert!(matches!(store.configdrive(C).await, Err(StoreError::UnknownNode(_))));
    assert!(matches!(
        store
            .transition_if(C, &[Active], Active, None, "x", ConfigDriveChange::Keep, "c")
            .await,
        Err(StoreError::UnknownNode(_))
    ));
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&db::render_ddl(schema::BASE, Dialect::Sqlite))
        .unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    conn.execute(
        "INSERT INTO nodes (uuid, name, provision_state, created_at, updated_at, state_since) \
         VALUES (?1, 'n', 'active', 1, 1, 1)",
        [A],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&Location::Sqlite(path)).await.unwrap();
    let node = store.node(A).await.unwrap().unwrap();
    assert_eq!((node.provision_state, node.has_configdrive), (Active, false));
    assert_eq!((node.conductor_group.as_str(), node.spec.is_none()), ("", true));
    assert_eq!(store.version().await.unwrap(), schema::SCHEMA_VERSION);
}

#[tokio::test]
async fn open_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    drop(Store::open(&Location::Sqlite(path.clone())).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    assert!(matches!(
        Store::open(&Location::Sqlite(path)).await,
        Err(StoreError::SchemaTooNew { found: 7, supported: 3 })
    ));
    let err = Store::open(&Location::Sqlite(dir.path().join("no/such/dir/db")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. }) && err.to_string().contains("no/such/dir"),
        "{err}"
    );
    let err = Store::open(&Location::Postgres("postgres://u:secret@127.0.0.1:1/x".into()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to the state database postgres://u:***@127.0.0.1:1/x")
            && !text.contains("secret"),
        "{text}"
    );
}

#[test]
fn rfc3339_known_values() {
    assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000+00:00");
    assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500000+00:00");
    assert_eq!(rfc3339(1_795_633_384.123_456), "2026-11-25T19:03:04.123456+00:00");
    assert_eq!(rfc3339(951_868_799.0), "2000-02-29T23:59:59.000000+00:00");
    assert_eq!(rfc3339(4_107_542_400.0), "2100-03-01T00:00:00.000000+00:00");
    assert_eq!(rfc3339(-1.0), "1969-12-31T23:59:59.000000+00:00");
    assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000000+00:00");
    let _ = rfc3339(f64::INFINITY);
}
