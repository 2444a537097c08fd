//! The command line of `conductor-writer`, a library so that `main.rs` only
//! starts logging and the runtime.
//!
//! - [`args`]: every subcommand and flag, and how they become options.
//! - [`commands`]: what each command does and the line it prints.

mod args;
mod commands;

pub use args::Cli;
pub use commands::{Inquiry, WriteArgs, WriteSummary};

use crate::capture::CaptureOptions;
use crate::connect;
use crate::service::{self, ServiceOptions};
use crate::url::IscsiUrl;
use crate::write::WriteOptions;
use anyhow::Context;
use args::{Command, DEFAULT_INITIATOR, iqn_suffix};
use std::path::PathBuf;
use std::time::Duration;

impl Cli {
    /// A service logs what it does; a one-shot command only what goes wrong.
    #[must_use]
    pub fn log_level(&self) -> &'static str {
        if matches!(self.command, Command::Serve(_)) {
            "info"
        } else {
            "warn"
        }
    }
}

/// Run one command of the command line and print what it answers.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Deploy(args) => {
            let options = args.options()?;
            let url = IscsiUrl {
                host: args.address.clone(),
                port: args.port,
                target: args.iqn.clone(),
                lun: args.lun,
                user: None,
            };
            let progress = args.io.progress();
            let notify = (!args.no_notify).then_some(args.notify_port);
            let report =
                commands::deploy(&url, &args.login(), args.io.sessions.max(1), &options, progress, notify).await?;
            if args.io.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.text());
            }
        }
        Command::Write {
            image,
            verify,
            checksum,
            checksum_first,
            skip_zeroes,
        } => {
            let args = image.write_args(checksum, verify, skip_zeroes, checksum_first);
            let summary = commands::write(&image.image, &image.url, &image.io.login.login(), &args).await?;
            if image.io.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{}", summary.line());
            }
        }
        Command::Verify { image } => {
            let args = image.write_args(None, true, false, false);
            commands::verify(&image.image, &image.url, &image.io.login.login(), &args).await?;
            if image.io.json {
                println!(
                    "{}",
                    serde_json::json!({ "image": image.image.to_string(), "target": image.url.to_string(), "verified": true })
                );
            } else {
                println!("{} matches {}", image.url, image.image);
            }
        }
        Command::Read {
            url,
            output,
            format,
            compress,
            io,
        } => {
            let options = CaptureOptions {
                format,
                compress,
                queue_depth: io.queue_depth.max(1),
                max_io: WriteOptions::default().max_io,
            };
            let report = commands::read(
                &url,
                &output,
                &io.login.login(),
                io.sessions.max(1),
                &options,
                io.progress(),
            )
            .await?;
            if io.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", commands::capture_line(&url, &report));
            }
        }
        Command::Discover { portal, login, json } => {
            let targets = commands::discover(&portal, &login.login()).await?;
            if json {
                let list: Vec<_> = targets
                    .iter()
                    .map(|t| serde_json::json!({ "name": t.name, "addresses": t.addresses }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for t in targets {
                    println!("{} {}", t.name, t.addresses.join(" "));
                }
            }
        }
        Command::Inquiry { url, login, json } => {
            let answer = commands::inquiry(&url, &login.login()).await?;
            if json {
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                println!("{}", answer.line());
            }
        }
        Command::Serve(args) => {
            let db = service::store::Location::parse(&args.db);
            let cache_dir = args.cache_dir.clone().unwrap_or_else(|| match &db {
                service::store::Location::Sqlite(path) => path
                    .parent()
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
                    .join("image-cache"),
                service::store::Location::Postgres(_) => PathBuf::from("image-cache"),
            });
            let group = args.conductor_group.to_ascii_lowercase();
            service::nodes::check_conductor_group(&group).map_err(|e| anyhow::anyhow!("--conductor-group {e}"))?;
            let conductor = args
                .conductor
                .clone()
                .unwrap_or_else(|| format!("{}:{}", service::hostname(), args.listen.port()));
            anyhow::ensure!(
                !conductor.trim().is_empty() && conductor.len() <= 255,
                "--conductor must be a name of 1 to 255 characters"
            );
            let mut login = args.login.login();
            // Each instance logs in under its own name, so that a ramdisk serving
            // one initiator at a time tells instances apart.
            if login.initiator_name == DEFAULT_INITIATOR {
                login.initiator_name = format!("{DEFAULT_INITIATOR}:{}", iqn_suffix(&conductor));
            }
            let options = ServiceOptions {
                nodes_file: args.nodes,
                listen: args.listen,
                db,
                max_parallel: args.max_parallel.max(1),
                callback_timeout: Duration::from_secs(args.callback_timeout.max(1)),
                cache_dir,
                login,
                write: WriteOptions::default(),
                sessions: args.sessions.max(1),
                auth: match args.htpasswd {
                    Some(file) => service::http::auth::ApiAuth::Htpasswd(file),
                    None => service::http::auth::ApiAuth::Open { explicit: args.no_auth },
                },
                ca_cert: args.ca_cert,
                tls: match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
                    _ => None,
                },
                conductor,
                conductor_group: group,
                lease: Duration::from_secs(args.lease_timeout.max(1)),
            };
            service::run(options, iscsi_wire::shutdown_signal()).await?;
        }
        Command::PxeConfig {
            node,
            nodes,
            api_url,
            tls,
            kernel,
            ramdisk,
        } => {
            let api_url = service::client::api_url(api_url.as_deref(), tls)?;
            let specs = service::nodes::load(&nodes)?;
            let spec = specs
                .iter()
                .find(|s| s.uuid.eq_ignore_ascii_case(&node) || s.name.as_deref() == Some(node.as_str()))
                .with_context(|| format!("no node {node} in {}", nodes.display()))?;
            print!("{}", service::client::pxe_config(spec, &api_url, &kernel, &ramdisk)?);
        }
        Command::Status {
            url,
            user,
            ca_cert,
            json,
        } => {
            let credentials = match user {
                Some(user) => Some((
                    user,
                    std::env::var("OS_PASSWORD")
                        .context("--user (or $OS_USERNAME) needs the password in $OS_PASSWORD")?,
                )),
                None => None,
            };
            let agent = crate::tls::http_agent(ca_cert.as_deref(), Duration::from_secs(10))?;
            let nodes =
                tokio::task::spawn_blocking(move || service::client::fetch_nodes(&agent, &url, credentials.as_ref()))
                    .await??;
            if json {
                println!("{nodes}");
            } else {
                print!("{}", service::client::status_table(&nodes));
            }
        }
        Command::Notify { address, port } => connect::notify(&address, port, Duration::from_secs(30)).await?,
    }
    Ok(())
}
