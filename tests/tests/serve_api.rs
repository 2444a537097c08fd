//! `conductor-writer serve`'s HTTP API as Ironic's clients meet it, over
//! real HTTP on loopback: authentication and what stays public, start-up
//! refusals, version documents and microversion headers, the node list's
//! query, provision requests with each of Ironic's answers, and the error
//! bodies. The deploys themselves are in `serve.rs` and
//! `serve_ironic_clients.rs`.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::serve::{Reply, Serve, basic, http, key, node_toml, states, uuid};
use integration_tests::tgtd::free_port;
use integration_tests::{conductor_writer, conductor_writer_with, config_drive_iso, must, output_text};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

const LATEST: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "latest");

/// Three nodes that never deploy (their portals answer nothing), the third
/// with a portal that accepts and stays silent, so a deploy hangs in login.
fn three_nodes(dir: &Path, silent_port: u16) {
    let image = dir.join("root.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let nodes = [
        node_toml(1, &image, free_port(), free_port(), "name = \"rack1-node1\""),
        node_toml(2, &image, free_port(), free_port(), "name = \"rack1-node2\""),
        node_toml(3, &image, silent_port, free_port(), "name = \"rack1-node3\""),
    ]
    .concat();
    std::fs::write(dir.join("nodes.toml"), nodes).unwrap();
}

/// Every answer carries the version range; `version` is what was served.
fn versioned(reply: &Reply, version: Option<&str>) {
    assert_eq!(
        reply.header("x-openstack-ironic-api-minimum-version"),
        Some("1.1"),
        "{reply:?}"
    );
    assert_eq!(
        reply.header("x-openstack-ironic-api-maximum-version"),
        Some("1.75"),
        "{reply:?}"
    );
    assert_eq!(reply.header("x-openstack-ironic-api-version"), version, "{reply:?}");
}

fn names(reply: &Reply) -> Vec<String> {
    reply.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn basic_authentication_guards_all_but_the_callbacks_and_versions() {
    let dir = TempDir::new().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    must("htpasswd", &["-cbB", htpasswd.to_str().unwrap(), "operator", "s3cret"]);
    three_nodes(dir.path(), free_port());
    let port = free_port();
    let serve = Serve::start(dir.path(), port, &["--htpasswd", htpasswd.to_str().unwrap()])
        .with_credentials("operator", "s3cret");
    assert!(
        serve.log().contains("the API requires HTTP basic authentication"),
        "{}",
        serve.log()
    );
    let url = |path: &str| serve.url(path);

    // Public: the version documents and the ramdisk callbacks.
    for path in ["/", "/v1", "/v1/"] {
        let reply = http("GET", &url(path), &[], None);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        versioned(&reply, Some("1.1"));
    }
    let wrong = json!({"address": "127.0.0.1", "key": "nope", "iqn": "iqn.x", "error": ""}).to_string();
    let callback = format!("/v1/nodes/{}/vendor_passthru/pass_deploy_info", uuid(1));
    let reply = http("POST", &url(&callback), &[], Some(&wrong));
    assert_eq!((reply.status, reply.fault()), (400, "Deploy key does not match".into()));
    // The boot loader callback proves its key the same way, before anything else.
    let bootloader = format!("/v1/nodes/{}/vendor_passthru/pass_bootloader_install_info", uuid(1));
    let wrong_loader = json!({"address": "127.0.0.1", "key": "nope", "status": "SUCCEEDED", "error": ""}).to_string();
    let reply = http("POST", &url(&bootloader), &[], Some(&wrong_loader));
    assert_eq!((reply.status, reply.fault()), (400, "Deploy key does not match".into()));
    let right_loader = wrong_loader.replace("nope", &key(1));
    let reply = http("POST", &url(&bootloader), &[], Some(&right_loader));
    assert_eq!(reply.status, 409, "not waiting for its boot loader: {}", reply.body);

    // Everything else needs a user of the file.
    let good = basic("operator", "s3cret");
    let provision = format!("/v1/nodes/{}/states/provision", uuid(1));
    for (method, path, body) in [
        ("GET", "/v1/nodes", None),
        ("GET", "/v1/nodes/detail", None),
        ("GET", "/v1/nodes/rack1-node1", None),
        ("PUT", provision.as_str(), Some(r#"{"target": "deleted"}"#)),
        ("GET", "/metrics", None),
    ] {
        for (authorization, fault) in [
            (None, "Authorization required"),
            (Some(basic("operator", "guess")), "Incorrect username or password"),
            (Some(basic("intruder", "s3cret")), "Incorrect username or password"),
        ] {
            let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", a.as_str())).collect();
            let reply = http(method, &url(path), &headers, body);
            assert_eq!(
                (reply.status, reply.fault()),
                (401, fault.to_owned()),
                "{method} {path}"
            );
            assert_eq!(reply.header("www-authenticate"), Some("Basic realm=\"Baremetal API\""));
            versioned(&reply, Some("1.1"));
        }
        let reply = http(method, &url(path), &[("Authorization", "Bearer abc")], body);
        assert_eq!(
            (reply.status, reply.fault()),
            (400, "Unsupported authorization type \"Bearer\"".into())
        );
    }
    let node = serve.node(&uuid(1));
    assert_eq!(
        node["provision_state"], "wait call-back",
        "the refused PUTs changed nothing"
    );
    assert_eq!(states(&node), ["wait call-back"]);
    let reply = http("GET", &url("/metrics"), &[("Authorization", &good)], None);
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("conductor_writer_api_unauthorized_total 20"),
        "{}",
        reply.body
    );
    for (reason, count) in [("wrong_key", 2), ("wrong_state", 1)] {
        let line = format!("conductor_writer_callbacks_rejected_total{{reason=\"{reason}\"}} {count}");
        assert!(reply.body.contains(&line), "{line}: {}", reply.body);
    }

    // `status` with the user from its flag or $OS_USERNAME, the password from $OS_PASSWORD.
    let out = conductor_writer(&["status", "--url", &url("")]);
    assert!(
        !out.status.success() && output_text(&out).contains("requires a user"),
        "{}",
        output_text(&out)
    );
    let out = conductor_writer_with(
        &["status", "--url", &url("")],
        &[("OS_USERNAME", "operator"), ("OS_PASSWORD", "s3cret")],
    );
    assert!(
        out.status.success() && output_text(&out).contains("rack1-node2"),
        "{}",
        output_text(&out)
    );
    let out = conductor_writer_with(
        &["status", "--url", &url(""), "--user", "operator"],
        &[("OS_PASSWORD", "no")],
    );
    assert!(
        !out.status.success() && output_text(&out).contains("refused"),
        "{}",
        output_text(&out)
    );

    // The file is read for each request: a user removed is refused at once.
    std::fs::write(&htpasswd, "# nobody\n").unwrap();
    let reply = http("GET", &url("/v1/nodes"), &[("Authorization", &good)], None);
    assert_eq!(reply.status, 401);
}

#[test]
fn serve_refuses_to_start_open_on_the_network_or_with_a_bad_password_file() {
    let dir = TempDir::new().unwrap();
    three_nodes(dir.path(), free_port());
    let nodes = dir.path().join("nodes.toml");
    let db = dir.path().join("state.sqlite");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--nodes",
            nodes.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ];
        args.extend(extra);
        conductor_writer(&args)
    };
    // Refused before listening: nothing binds the wildcard address.
    let out = serve(&["--listen", "0.0.0.0:6385"]);
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("refusing to serve the API on 0.0.0.0:6385 without authentication"),
        "{said}"
    );
    assert!(said.contains("--htpasswd") && said.contains("--no-auth"), "{said}");
    assert!(!db.exists(), "nothing was opened");
    let out = serve(&["--listen", "[::]:6385"]);
    assert!(!out.status.success(), "{}", output_text(&out));

    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, "operator:$apr1$cqAy/RL7$wxuc3..gdbBn60Kxv2rBG0\n").unwrap();
    let out = serve(&["--listen", "127.0.0.1:0", "--htpasswd", htpasswd.to_str().unwrap()]);
    let said = output_text(&out);
    assert!(
        !out.status.success() && said.contains("line 1") && said.contains("only bcrypt"),
        "{said}"
    );
    let out = serve(&["--htpasswd", htpasswd.to_str().unwrap(), "--no-auth"]);
    assert!(
        !out.status.success() && output_text(&out).contains("cannot be used with"),
        "{}",
        output_text(&out)
    );

    // On loopback without a file, or with --no-auth, it starts and says so.
    let serve = Serve::start(dir.path(), free_port(), &[]);
    assert!(
        serve
            .log()
            .contains("no --htpasswd: the API is open to every user of this machine"),
        "{}",
        serve.log()
    );
    serve.stop();
    let serve = Serve::start(dir.path(), free_port(), &["--no-auth"]);
    assert!(serve.log().contains("--no-auth: anyone who reaches"), "{}", serve.log());
}

#[test]
fn versions_lists_and_provision_requests_are_answered_as_ironic_answers_them() {
    let dir = TempDir::new().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    three_nodes(dir.path(), silent.local_addr().unwrap().port());
    let serve = Serve::start(dir.path(), free_port(), &[]);
    let url = |path: &str| serve.url(path);
    let get = |path: &str, version: &str| http("GET", &url(path), &[("X-OpenStack-Ironic-API-Version", version)], None);

    // Version documents, and the range on every answer.
    let root = http("GET", &url("/"), &[], None).json();
    assert_eq!(root["default_version"]["version"], "1.75");
    assert_eq!(root["versions"][0]["min_version"], "1.1");
    assert_eq!(root["versions"][0]["links"][0]["href"], url("/v1/"));
    let v1 = http("GET", &url("/v1/"), &[], None).json();
    assert_eq!((&v1["id"], &v1["version"]["version"]), (&json!("v1"), &json!("1.75")));
    assert_eq!(http("HEAD", &url("/v1"), &[], None).status, 200);
    versioned(&get("/v1/nodes", "1.31"), Some("1.31"));
    versioned(&get("/v1/nodes", "latest"), Some("1.75"));
    let modern = http(
        "GET",
        &url("/v1/nodes"),
        &[("OpenStack-API-Version", "baremetal 1.9")],
        None,
    );
    versioned(&modern, Some("1.9"));
    for (version, says) in [
        (
            "1.76",
            "Version 1.76 was requested but the minor version is not supported",
        ),
        ("1.0", "The supported version range is: [1.1, 1.75]"),
        ("2.1", "Mutually exclusive versions requested"),
        ("one", "Invalid value for X-OpenStack-Ironic-API-Version header"),
    ] {
        let reply = get("/v1/nodes", version);
        assert_eq!(reply.status, 406, "{version}");
        assert!(reply.fault().contains(says), "{version}: {}", reply.fault());
        versioned(&reply, None);
    }

    // The list: Ironic's default fields, a node's fields by version.
    let plain = get("/v1/nodes", "latest").json();
    let mut keys: Vec<&str> = plain["nodes"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "instance_uuid",
            "links",
            "maintenance",
            "name",
            "power_state",
            "provision_state",
            "uuid"
        ]
    );
    assert!(
        get("/v1/nodes", "1.4").json()["nodes"][0].get("name").is_none(),
        "names came in 1.5"
    );
    // Filters, with or without the trailing slash the clients send.
    let deleted = format!("/v1/nodes/{}/states/provision", uuid(2));
    let reply = http("PUT", &url(&deleted), &[LATEST], Some(r#"{"target": "deleted"}"#));
    assert_eq!(reply.status, 202, "{}", reply.body);
    versioned(&reply, Some("1.75"));
    assert_eq!(
        names(&get("/v1/nodes/?provision_state=available", "1.9")),
        ["rack1-node2"]
    );
    assert_eq!(
        names(&get("/v1/nodes?provision_state=wait%20call-back", "1.9")),
        ["rack1-node1", "rack1-node3"]
    );
    assert_eq!(
        names(&get("/v1/nodes/detail/?provision_state=active", "1.9")),
        Vec::<String>::new()
    );
    assert_eq!(get("/v1/nodes?provision_state=available", "1.8").status, 406);
    assert_eq!(get("/v1/nodes?maintenance=true", "latest").json()["nodes"], json!([]));
    assert_eq!(
        get("/v1/nodes?driver=ipmi", "latest").json()["nodes"],
        json!([]),
        "no node has a driver"
    );
    assert_eq!(
        names(&get("/v1/nodes?sort_key=name&sort_dir=desc", "latest")),
        ["rack1-node3", "rack1-node2", "rack1-node1"]
    );
    // Paging: a full page links to the next one, with the filters kept.
    let first = get("/v1/nodes?provision_state=wait%20call-back&limit=1", "latest").json();
    assert_eq!(first["nodes"][0]["name"], "rack1-node1");
    let next = first["next"].as_str().unwrap();
    assert_eq!(
        next,
        url(&format!(
            "/v1/nodes?provision_state=wait+call-back&limit=1&marker={}",
            uuid(1)
        ))
    );
    let second = http("GET", next, &[LATEST], None).json();
    assert_eq!(second["nodes"][0]["name"], "rack1-node3");
    let missing = get("/v1/nodes?marker=00000000-0000-4000-8000-000000000000", "latest");
    assert_eq!(
        (missing.status, missing.fault()),
        (
            404,
            "Node 00000000-0000-4000-8000-000000000000 could not be found.".into()
        )
    );
    // Fields and detail.
    let some = get("/v1/nodes?fields=uuid,provision_state", "latest").json();
    let mut keys: Vec<&str> = some["nodes"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["links", "provision_state", "uuid"]);
    let detail = get("/v1/nodes?detail=True", "latest").json();
    assert_eq!(detail["nodes"][0]["deploy_interface"], "iscsi");
    assert_eq!(detail["nodes"][0]["target_provision_state"], "active");
    assert_eq!(detail["nodes"][1]["target_provision_state"], Value::Null, "available");
    assert_eq!(
        get("/v1/nodes/detail", "latest").json()["nodes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for (path, version, status, says) in [
        (
            "/v1/nodes?fields=uuid&detail=True",
            "latest",
            400,
            "Can not specify ?detail=True and fields",
        ),
        (
            "/v1/nodes?detail=True",
            "1.42",
            400,
            "Invalid query parameter ?detail=True received.",
        ),
        ("/v1/nodes?colour=red", "latest", 400, "Unexpected arguments: colour"),
        (
            "/v1/nodes/detail?fields=uuid",
            "latest",
            400,
            "Unexpected arguments: fields",
        ),
        (
            "/v1/nodes?provision_state=flying",
            "latest",
            400,
            "Provision state \"flying\" is not valid",
        ),
        ("/v1/nodes?limit=0", "latest", 400, "Limit must be positive"),
        (
            "/v1/nodes?marker=rack1-node1",
            "latest",
            400,
            "Expected UUID for marker",
        ),
        ("/v1/nodes?fields=colour", "latest", 400, "are not valid"),
        ("/v1/nodes?sort_key=extra", "latest", 400, "invalid field for sorting"),
        ("/v1/nodes?fields=boot_mode", "1.74", 406, "Request not acceptable."),
        ("/v1/nodes?shard=a", "latest", 406, "Request not acceptable."),
    ] {
        let reply = get(path, version);
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert!(reply.fault().contains(says), "{path}: {}", reply.fault());
    }

    // One node, by UUID or name, with or without a trailing slash.
    for path in [
        format!("/v1/nodes/{}", uuid(1)),
        "/v1/nodes/rack1-node1/".into(),
        "/nodes/rack1-node1".into(),
    ] {
        let node = get(&path, "latest").json();
        assert_eq!(
            (&node["uuid"], &node["name"]),
            (&json!(uuid(1)), &json!("rack1-node1")),
            "{path}"
        );
        assert_eq!(node["events"].as_array().unwrap().len(), 1);
    }
    let some = get("/v1/nodes/rack1-node1?fields=provision_state", "latest").json();
    assert_eq!(some.as_object().unwrap().len(), 2, "{some}");
    let reply = get("/v1/nodes/rack9-node9", "latest");
    assert_eq!(
        (reply.status, reply.fault()),
        (404, "Node rack9-node9 could not be found.".into())
    );
    assert_eq!(get("/v1/ports", "latest").status, 404);
    let reply = http("DELETE", &url("/v1/nodes/rack1-node1"), &[], None);
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET")));

    // Provision requests: 202, or Ironic's refusal, and a refusal changes nothing.
    let put = |node: &str, version: &str, body: &str| {
        let path = format!("/v1/nodes/{node}/states/provision/");
        http(
            "PUT",
            &url(&path),
            &[("X-OpenStack-Ironic-API-Version", version)],
            Some(body),
        )
    };
    let reply = put("rack1-node1", "latest", r#"{"target": "rebuild"}"#);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        format!(
            "The requested action \"rebuild\" can not be performed on node \"{}\" while it is in state \"wait call-back\".",
            uuid(1)
        )
    );
    for (body, version, says) in [
        (r#"{"target": "active"}"#, "latest", "can not be performed"),
        (r#"{"target": "manage"}"#, "latest", "not served by conductor-writer"),
        (r#"{"target": "fly"}"#, "latest", "could not be understood"),
        (r#"{}"#, "latest", "Missing mandatory parameter: target"),
        (
            r#"{"target": "active", "configdrive": "H4sI not a drive"}"#,
            "latest",
            "Invalid configdrive format",
        ),
        (
            r#"{"target": "active", "configdrive": {"meta_data": {}}}"#,
            "latest",
            "cannot build a config drive",
        ),
        (
            r#"{"target": "deleted", "configdrive": "aGk="}"#,
            "latest",
            "Adding a config drive is only supported",
        ),
    ] {
        let reply = put("rack1-node1", version, body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(reply.fault().contains(says), "{body}: {}", reply.fault());
    }
    assert_eq!(put("rack1-node1", "1.72", r#"{"target": "undeploy"}"#).status, 406);
    assert_eq!(put("rack9-node9", "latest", r#"{"target": "active"}"#).status, 404);
    assert_eq!(states(&serve.node(&uuid(1))), ["wait call-back"], "nothing changed");
    // Torn down: no callback is taken, even with the right key.
    let node = serve.node(&uuid(2));
    assert_eq!(
        (&node["provision_state"], &node["target_provision_state"]),
        (&json!("available"), &Value::Null)
    );
    let callback = |n: u32| {
        let path = format!("/v1/nodes/{}/vendor_passthru/pass_deploy_info", uuid(n));
        let body = json!({"address": "127.0.0.1", "key": key(n), "iqn": "iqn.x", "error": ""}).to_string();
        http("POST", &url(&path), &[], Some(&body))
    };
    assert_eq!(callback(2).status, 409);
    assert_eq!(serve.node(&uuid(2))["provision_state"], "available");
    // Deployed again, with a config drive: it waits for its ramdisk.
    let reply = put(
        "rack1-node2",
        "1.73",
        &json!({"target": "deploy", "configdrive": config_drive(dir.path())}).to_string(),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let node = serve.node(&uuid(2));
    assert_eq!(
        (&node["provision_state"], &node["target_provision_state"]),
        (&json!("wait call-back"), &json!("active"))
    );
    assert_eq!(node["instance_info"]["configdrive"], "******");
    assert_eq!(states(&node), ["wait call-back", "available", "wait call-back"]);

    // A running deploy locks its node: 409, which clients retry.
    assert_eq!(callback(3).status, 202);
    serve.wait_for(&uuid(3), "deploying", Duration::from_secs(10));
    let node = serve.node(&uuid(3));
    assert!(node["reservation"].is_string(), "{node}");
    for target in ["rebuild", "deleted", "active"] {
        let reply = put("rack1-node3", "latest", &format!(r#"{{"target": "{target}"}}"#));
        assert_eq!(reply.status, 409, "{target}");
        assert!(reply.fault().contains("is locked by host"), "{}", reply.fault());
    }
    assert_eq!(callback(3).status, 409, "a second callback for a running deploy");
    drop(silent);
}

/// A gzipped, base64-encoded ISO 9660 config drive, as text.
fn config_drive(dir: &Path) -> String {
    let iso = config_drive_iso(dir, "cd.iso", "{}");
    must("sh", &["-c", &format!("gzip -c {} | base64 -w0", iso.display())])
}
