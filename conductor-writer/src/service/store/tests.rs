//! The store against in-memory and on-disk databases: transitions, deploys,
//! recovery after a restart, migrations.

use std::sync::Arc;

use super::ProvisionState::*;
use super::*;

const A: &str = "11111111-1111-4111-8111-111111111111";
const B: &str = "22222222-2222-4222-8222-222222222222";
const C: &str = "33333333-3333-4333-8333-333333333333";
const D: &str = "44444444-4444-4444-8444-444444444444";

fn spec(uuid: &str, name: Option<&str>) -> NodeSpec {
    let text = format!("[[node]]\nuuid = {uuid:?}\ndeploy_key = \"0123456789abcdef\"\nimage = \"/i.img\"\n");
    let mut node = super::super::nodes::parse(&text, Path::new("t.toml"))
        .unwrap()
        .remove(0);
    node.name = name.map(Into::into);
    node
}

fn state(store: &Store, uuid: &str) -> (ProvisionState, Option<String>) {
    let node = store.node(uuid).unwrap().unwrap();
    (node.provision_state, node.last_error)
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
}

#[test]
fn sync_adds_nodes_in_wait_call_back() {
    let store = Store::open_in_memory().unwrap();
    let log = store
        .sync_nodes(&[spec(B, None), spec(A, Some("rack1-node1"))])
        .unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains(A) && l.contains("rack1-node1") && l.contains("added")),
        "{log:?}"
    );
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes.iter().map(|n| n.uuid.as_str()).collect::<Vec<_>>(), [A, B]);
    assert!(
        nodes
            .iter()
            .all(|n| n.provision_state == WaitCallBack && n.last_error.is_none())
    );
    assert_eq!(nodes[0].name.as_deref(), Some("rack1-node1"));
    assert_eq!(store.events(A).unwrap()[0].to_state, WaitCallBack);
    assert!(store.node(C).unwrap().is_none());
    assert!(matches!(store.events(C), Err(StoreError::UnknownNode(_))));
    assert!(matches!(
        store.transition(C, Active, None, "x"),
        Err(StoreError::UnknownNode(_))
    ));
    assert!(matches!(
        store.start_deploy(C, "10.0.0.9"),
        Err(StoreError::UnknownNode(_))
    ));
    // A second sync with the same file changes nothing.
    assert_eq!(
        store
            .sync_nodes(&[spec(A, Some("rack1-node1")), spec(B, None)])
            .unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.events(A).unwrap().len(), 1);
}

#[test]
fn transitions_write_events_in_order_and_keep_last_error_by_the_rules() {
    let store = Store::open_in_memory().unwrap();
    store.sync_nodes(&[spec(A, None)]).unwrap();
    store.transition(A, Deploying, None, "callback from 10.0.0.5").unwrap();
    store
        .transition(A, DeployFailed, Some("login refused"), "deploy failed")
        .unwrap();
    assert_eq!(state(&store, A), (DeployFailed, Some("login refused".into())));
    let failed_since = store.node(A).unwrap().unwrap().state_since;
    std::thread::sleep(Duration::from_millis(5));
    store.transition(A, DeployFailed, None, "still failed").unwrap();
    let again = store.node(A).unwrap().unwrap();
    assert_eq!(again.state_since, failed_since, "the same state keeps its start");
    assert!(again.updated_at > again.created_at);
    assert_eq!(
        state(&store, A),
        (DeployFailed, Some("login refused".into())),
        "None keeps in deploy failed"
    );
    store.transition(A, WaitCallBack, None, "retry").unwrap();
    assert!(
        store.node(A).unwrap().unwrap().state_since > failed_since,
        "a new state starts now"
    );
    assert_eq!(state(&store, A), (WaitCallBack, None), "None clears on wait call-back");
    store
        .transition(A, Deploying, Some("warning kept"), "callback")
        .unwrap();
    assert_eq!(
        state(&store, A),
        (Deploying, Some("warning kept".into())),
        "Some always sets"
    );
    store.transition(A, Active, None, "done").unwrap();
    assert_eq!(state(&store, A), (Active, None));
    let events = store.events(A).unwrap();
    let path: Vec<_> = events
        .iter()
        .map(|e| (e.from_state, e.to_state, e.detail.as_str()))
        .collect();
    assert_eq!(
        path,
        [
            (None, WaitCallBack, "added from the nodes file"),
            (Some(WaitCallBack), Deploying, "callback from 10.0.0.5"),
            (Some(Deploying), DeployFailed, "deploy failed"),
            (Some(DeployFailed), DeployFailed, "still failed"),
            (Some(DeployFailed), WaitCallBack, "retry"),
            (Some(WaitCallBack), Deploying, "callback"),
            (Some(Deploying), Active, "done"),
        ]
    );
}

#[test]
fn deploy_rows_start_and_finish() {
    let store = Store::open_in_memory().unwrap();
    store.sync_nodes(&[spec(A, None)]).unwrap();
    let id = store.start_deploy(A, "10.0.0.5").unwrap();
    let open = store.deploys(A).unwrap();
    assert_eq!(
        (open[0].id, open[0].address.as_deref(), &open[0].finished_at),
        (id, Some("10.0.0.5"), &None)
    );
    let done = DeployRow {
        outcome: Some("active".into()),
        bytes_sent: 5 << 30,
        bytes_zeroed: 1 << 20,
        image_bytes: 7 << 30,
        seconds: 12.5,
        mib_per_second: 409.6,
        root_uuid: Some("c0ffee00-0000-4000-8000-000000000000".into()),
        ..DeployRow::default()
    };
    store.finish_deploy(id, &done).unwrap();
    assert!(matches!(store.finish_deploy(id, &done), Err(StoreError::DeployNotOpen(i)) if i == id));
    assert!(matches!(
        store.finish_deploy(999, &done),
        Err(StoreError::DeployNotOpen(999))
    ));
    let row = store.deploys(A).unwrap().remove(0);
    assert!(row.finished_at.is_some() && row.started_at.ends_with("+00:00"));
    assert_eq!(
        (
            row.outcome.as_deref(),
            row.bytes_sent,
            row.bytes_zeroed,
            row.image_bytes
        ),
        (Some("active"), 5 << 30, 1 << 20, 7 << 30)
    );
    assert_eq!(
        (row.seconds, row.mib_per_second, row.root_uuid, row.error),
        (12.5, 409.6, done.root_uuid, None)
    );
    let second = store.start_deploy(A, "10.0.0.6").unwrap();
    assert_eq!(
        store.deploys(A).unwrap().iter().map(|d| d.id).collect::<Vec<_>>(),
        [id, second]
    );
}

#[test]
fn reopen_keeps_everything_and_fails_interrupted_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let (deploying_id, waiting_id) = {
        let store = Store::open(&path).unwrap();
        store
            .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(C, None), spec(D, None)])
            .unwrap();
        // A: called back and was writing; B: waiting for the boot-loader callback; C: done;
        // D: stopped between its callback and its deploy row.
        store.transition(D, Deploying, None, "callback").unwrap();
        store.transition(A, Deploying, None, "callback").unwrap();
        let a = store.start_deploy(A, "10.0.0.1").unwrap();
        store.transition(B, Deploying, None, "callback").unwrap();
        let b = store.start_deploy(B, "10.0.0.2").unwrap();
        store
            .transition(B, WaitCallBack, None, "waiting for pass_bootloader_install_info")
            .unwrap();
        store.transition(C, Active, None, "done").unwrap();
        (a, b)
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.events(C).unwrap().len(), 2, "history survives the reopen");
    let log = store
        .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(D, None)])
        .unwrap();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log[0].contains(&format!("{A} (a): was deploying; now deploy failed")),
        "{log:?}"
    );
    assert!(log[1].contains(B) && log[1].contains("was wait call-back"), "{log:?}");
    assert!(log[2].contains(C) && log[2].contains("removed"), "{log:?}");
    assert!(log[3].contains(D) && log[3].contains("was deploying"), "{log:?}");
    let d = store.node(D).unwrap().unwrap();
    assert_eq!(d.provision_state, DeployFailed);
    let began = store.events(D).unwrap().remove(1).at;
    assert!(
        d.last_error
            .unwrap_or_default()
            .contains(&format!("(started at {began})"))
    );
    assert!(store.deploys(D).unwrap().is_empty());
    for (uuid, id) in [(A, deploying_id), (B, waiting_id)] {
        let (st, err) = state(&store, uuid);
        let err = err.unwrap_or_default();
        assert_eq!(st, DeployFailed);
        assert!(
            err.starts_with("the service stopped while the deploy was running (started at 20"),
            "{err}"
        );
        assert!(err.ends_with("nothing more was written; retry the deploy"), "{err}");
        let row = store.deploys(uuid).unwrap().remove(0);
        assert_eq!(
            (row.id, row.outcome.as_deref(), row.error.as_deref()),
            (id, Some("deploy failed"), Some(&*err))
        );
        assert!(row.finished_at.is_some());
        let last = store.events(uuid).unwrap().pop().unwrap();
        assert_eq!((last.to_state, last.detail), (DeployFailed, err));
    }
    assert_eq!(state(&store, C), (Active, None));
    assert_eq!(store.nodes().unwrap().len(), 4, "a removed node keeps its row");
    // Recovered once: the next start finds nothing to do but the removed node.
    let again = store
        .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(D, None)])
        .unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
}

#[test]
fn transition_if_changes_state_and_config_drive_together_or_nothing() {
    let store = Store::open_in_memory().unwrap();
    store.sync_nodes(&[spec(A, None)]).unwrap();
    let refused = store.transition_if(A, &[Active], WaitCallBack, None, "rebuild", ConfigDriveChange::Set("x"));
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
    assert_eq!(store.configdrive(A).unwrap(), None, "a refused change sets nothing");
    assert_eq!(store.events(A).unwrap().len(), 1);
    let from = store
        .transition_if(
            A,
            &[WaitCallBack],
            Available,
            None,
            "deleted",
            ConfigDriveChange::Set("H4sI"),
        )
        .unwrap();
    assert_eq!(from, WaitCallBack);
    let node = store.node(A).unwrap().unwrap();
    assert_eq!((node.provision_state, node.has_configdrive), (Available, true));
    assert_eq!(store.configdrive(A).unwrap().as_deref(), Some("H4sI"));
    store
        .transition_if(A, &[Available], WaitCallBack, None, "active", ConfigDriveChange::Keep)
        .unwrap();
    assert_eq!(store.configdrive(A).unwrap().as_deref(), Some("H4sI"), "kept");
    store
        .transition_if(A, &[WaitCallBack], Available, None, "deleted", ConfigDriveChange::Clear)
        .unwrap();
    assert!(!store.node(A).unwrap().unwrap().has_configdrive);
    assert!(matches!(store.configdrive(C), Err(StoreError::UnknownNode(_))));
    assert!(matches!(
        store.transition_if(C, &[Active], Active, None, "x", ConfigDriveChange::Keep),
        Err(StoreError::UnknownNode(_))
    ));
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute(
        "INSERT INTO nodes (uuid, name, provision_state, created_at, updated_at, state_since) \
         VALUES (?1, 'n', 'active', 1, 1, 1)",
        [A],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    let node = store.node(A).unwrap().unwrap();
    assert_eq!((node.provision_state, node.has_configdrive), (Active, false));
    let version: i64 = store.lock().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn open_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::SchemaTooNew { found: 7, supported: 2 })
    ));
    let err = Store::open(&dir.path().join("no/such/dir/db")).unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. }) && err.to_string().contains("no/such/dir"),
        "{err}"
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

#[test]
fn store_is_shared_between_threads() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let uuids = [A, B, C];
    store.sync_nodes(&uuids.map(|u| spec(u, None))).unwrap();
    let handles: Vec<_> = uuids
        .into_iter()
        .map(|uuid| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for round in 0..20 {
                    store
                        .transition(uuid, Deploying, None, &format!("round {round}"))
                        .unwrap();
                    let id = store.start_deploy(uuid, "10.0.0.1").unwrap();
                    let row = DeployRow {
                        outcome: Some("active".into()),
                        ..DeployRow::default()
                    };
                    store.finish_deploy(id, &row).unwrap();
                    store.transition(uuid, Active, None, &format!("round {round}")).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    for uuid in uuids {
        let events = store.events(uuid).unwrap();
        assert_eq!(events.len(), 41);
        assert_eq!(events.last().map(|e| e.detail.as_str()), Some("round 19"));
        assert!(store.deploys(uuid).unwrap().iter().all(|d| d.finished_at.is_some()));
    }
}
