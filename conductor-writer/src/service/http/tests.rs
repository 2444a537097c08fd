//! Routing tests: paths with and without `/v1` and a trailing slash, paths
//! no route takes, and which routes are public.

use super::{Route, route};

#[test]
fn routes_ignore_trailing_slashes_and_a_missing_v1() {
    let node = |s: &str| Some(Route::Show(s.to_owned()));
    assert_eq!(route("/"), Some(Route::Root));
    assert_eq!(route(""), Some(Route::Root));
    assert_eq!(route("/v1"), Some(Route::V1));
    assert_eq!(route("/v1/"), Some(Route::V1));
    assert_eq!(route("/v1/nodes/"), Some(Route::List { detail: false }));
    assert_eq!(route("/nodes"), Some(Route::List { detail: false }));
    assert_eq!(route("/v1/nodes/detail/"), Some(Route::List { detail: true }));
    assert_eq!(route("/v1/nodes/rack1-node1"), node("rack1-node1"));
    assert_eq!(route("/v1/nodes/rack1-node1/"), node("rack1-node1"));
    assert_eq!(
        route("/v1/nodes/n1/states/provision/"),
        Some(Route::Provision("n1".into()))
    );
    assert_eq!(
        route("/nodes/n1/vendor_passthru/pass_deploy_info"),
        Some(Route::Callback {
            node: "n1".into(),
            method: Some("pass_deploy_info".into())
        })
    );
    assert_eq!(route("/metrics"), Some(Route::Metrics));
    assert_eq!(route("/v1/conductors/"), Some(Route::Conductors));
    assert_eq!(
        route("/v1/conductors/farm1:6385"),
        Some(Route::Conductor("farm1:6385".into()))
    );
    assert_eq!(route("/v1/metrics"), None);
    assert_eq!(route("/v1/ports"), None);
    assert_eq!(route("/v1/nodes/n1/states"), None);
    assert!(
        Route::Callback {
            node: String::new(),
            method: None
        }
        .is_public()
    );
    assert!(!Route::Provision(String::new()).is_public() && !Route::Metrics.is_public());
}
