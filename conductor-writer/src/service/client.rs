//! The operator's side of the service: the boot configuration that starts
//! a node's ramdisk (`pxe-config`), and the state of every node (`status`).

use super::nodes::NodeSpec;
use deploy_contract::hints::RootDeviceHints;
use deploy_contract::kernel::{self, BootMode, BootOption, DeployParams};
use serde_json::Value;
use std::fmt::Write as _;

/// The kernel parameters the ramdisk needs to deploy `spec` and call back `api_url`: the legacy
/// set, plus `iscsi_chap=1` when the node wants CHAP, written by the crate the ramdisk reads
/// them with.
pub fn kernel_parameters(spec: &NodeSpec, api_url: &str) -> anyhow::Result<String> {
    let node = &spec.uuid;
    let params = DeployParams {
        deployment_id: Some(spec.uuid.clone()),
        deployment_key: Some(spec.deploy_key.clone()),
        iqn: Some(spec.iqn()),
        api_url: Some(api_url.trim_end_matches('/').to_owned()),
        root_device: spec
            .root_device
            .as_deref()
            .map(RootDeviceHints::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("node {node}: {e}"))?,
        boot_option: BootOption::parse(&spec.boot_option)
            .ok_or_else(|| anyhow::anyhow!("node {node}: boot_option {:?}", spec.boot_option))?,
        boot_mode: BootMode::parse(&spec.boot_mode)
            .ok_or_else(|| anyhow::anyhow!("node {node}: boot_mode {:?}", spec.boot_mode))?,
        chap: spec.chap,
    };
    Ok(params.to_string())
}

/// The kernel line, then a pxelinux and an iPXE configuration booting it.
pub fn pxe_config(spec: &NodeSpec, api_url: &str, kernel: &str, ramdisk: &str) -> anyhow::Result<String> {
    let params = kernel_parameters(spec, api_url)?;
    Ok(format!(
        "# kernel parameters for node {uuid}\n{params}\n\n\
         # pxelinux.cfg/01-<mac of the node>  (IPAPPEND 2 adds {bootif})\n\
         default deploy\nlabel deploy\n    kernel {kernel}\n    append initrd={ramdisk} {params}\n    ipappend 2\n\n\
         # iPXE\n#!ipxe\nkernel {kernel} {params} {bootif}=01-${{net0/mac:hexhyp}}\ninitrd {ramdisk}\nboot\n",
        uuid = spec.uuid,
        bootif = kernel::BOOTIF,
    ))
}

/// The URL the ramdisk calls back: `given`, else this host's default, `https` when the
/// service speaks TLS (and then never `http`).
pub fn api_url(given: Option<&str>, tls: bool) -> anyhow::Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let url = given.map_or_else(|| format!("{scheme}://127.0.0.1:6385"), str::to_owned);
    if tls && !url.to_ascii_lowercase().starts_with("https://") {
        anyhow::bail!("--tls: the service speaks TLS, so the ramdisk must call https://, not {url}");
    }
    Ok(url)
}

/// `GET {url}/v1/nodes/detail` through `agent`, as `(user, password)` if given.
pub fn fetch_nodes(agent: &ureq::Agent, url: &str, credentials: Option<&(String, String)>) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let address = format!("{}/v1/nodes/detail", url.trim_end_matches('/'));
    let mut request = agent.get(&address).header("X-OpenStack-Ironic-API-Version", "latest");
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("Authorization", &format!("Basic {token}"));
    }
    let mut response = request.call().map_err(|e| {
        anyhow::anyhow!("cannot reach the deploy service at {address}: {e}; is `conductor-writer serve` running?")
    })?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    match status {
        200 => Ok(serde_json::from_str(&text)?),
        401 if credentials.is_none() => anyhow::bail!(
            "the deploy service at {url} requires a user: give --user NAME (or $OS_USERNAME) and the password in $OS_PASSWORD"
        ),
        401 => anyhow::bail!("the deploy service at {url} refused the user name or password (HTTP 401)"),
        _ => anyhow::bail!(
            "the deploy service at {address} answered HTTP {status}: {}",
            error_text(&text)
        ),
    }
}

/// The message of an Ironic error body, or the body itself.
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error_message"].as_str().map(str::to_owned))
        .and_then(|fault| serde_json::from_str::<Value>(&fault).ok())
        .and_then(|fault| fault["faultstring"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// The nodes as a table: state, the instance holding (or last serving)
/// each, progress, last deploy, last error.
#[must_use]
pub fn status_table(nodes: &Value) -> String {
    let mut out = format!(
        "{:<36}  {:<14}  {:<14}  {:<16}  {:>8}  {:>10}  {}\n",
        "UUID", "NAME", "STATE", "CONDUCTOR", "PROGRESS", "LAST MiB/s", "LAST ERROR"
    );
    for node in nodes["nodes"].as_array().into_iter().flatten() {
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let progress = match (
            node["progress"]["done_bytes"].as_u64(),
            node["progress"]["total_bytes"].as_u64(),
        ) {
            (Some(done), Some(total)) if total > 0 => format!("{:.0}%", done as f64 * 100.0 / total as f64),
            _ => "-".into(),
        };
        let rate = node["last_deploy"]["mib_per_second"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .map_or_else(|| "-".into(), |r| format!("{r:.1}"));
        let conductor = match node["reservation"].as_str() {
            Some(holder) => format!("{holder}*"),
            None => text(&node["conductor"]),
        };
        let _ = writeln!(
            out,
            "{:<36}  {:<14}  {:<14}  {:<16}  {:>8}  {:>10}  {}",
            text(&node["uuid"]),
            text(&node["name"]),
            text(&node["provision_state"]),
            conductor,
            progress,
            rate,
            text(&node["last_error"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        let toml = "[[node]]\nuuid = \"1be26c0b-03f2-4d2d-ae87-c02d7f33c123\"\ndeploy_key = \"k3y-k3y-k3y\"\n\
                    image = \"/i.qcow2\"\nboot_option = \"local\"\nchap = true\nroot_device = \"serial=S1\"\n";
        super::super::nodes::parse(toml, std::path::Path::new("nodes.toml"))
            .expect("valid")
            .remove(0)
    }

    #[test]
    fn the_kernel_line_carries_every_legacy_parameter() {
        let line = kernel_parameters(&spec(), "http://10.0.0.1:6385/").unwrap();
        assert_eq!(
            line,
            "deployment_id=1be26c0b-03f2-4d2d-ae87-c02d7f33c123 deployment_key=k3y-k3y-k3y \
             iscsi_target_iqn=iqn.2008-10.org.openstack:1be26c0b-03f2-4d2d-ae87-c02d7f33c123 \
             ironic_api_url=http://10.0.0.1:6385 boot_option=local boot_mode=bios root_device=serial=S1 iscsi_chap=1"
        );
        let config = pxe_config(&spec(), "http://10.0.0.1:6385", "k", "r.cpio.gz").unwrap();
        assert!(config.contains("append initrd=r.cpio.gz deployment_id="), "{config}");
        assert!(config.contains("ipappend 2"), "{config}");
        assert!(config.contains("BOOTIF=01-${net0/mac:hexhyp}"), "{config}");
    }

    #[test]
    fn the_status_table_shows_progress_and_rates() {
        let nodes = serde_json::json!({"nodes": [
            {"uuid": "u1", "name": "n1", "provision_state": "deploying", "reservation": "c2", "conductor": "c2",
             "progress": {"done_bytes": 25, "total_bytes": 100}, "last_deploy": null, "last_error": null},
            {"uuid": "u2", "name": null, "provision_state": "deploy failed", "progress": null,
             "reservation": null, "conductor": "c1",
             "last_deploy": {"mib_per_second": 512.25}, "last_error": "boom"},
        ]});
        let table = status_table(&nodes);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("n1") && lines[1].contains("deploying") && lines[1].contains("25%"));
        assert!(lines[1].contains(" c2* "), "a holder is starred: {table}");
        assert!(lines[2].contains(" c1 ") && lines[2].contains("512.2") && lines[2].ends_with("boom"));
    }
}
