//! `kiln repo ...`: repository operations through the master's API, and
//! exporting a served channel.

use crate::Remote;
use anyhow::Context;
use clap::Subcommand;
use kiln_proto::api::{AdvisoryBody, PromoteBody, RemoveBody};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RepoCommand {
    /// List channels, or the packages of one channel.
    List {
        channel: Option<String>,
        /// Only package names matching this glob, e.g. `lib*`.
        #[arg(long)]
        filter: Option<String>,
        /// Only this target's repository.
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a package (every version, or one) from a channel.
    Remove {
        channel: String,
        name: String,
        #[arg(value_name = "VERSION")]
        pkg_version: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Copy a package version from one channel to another (re-signed with its key).
    Promote {
        name: String,
        #[arg(value_name = "VERSION")]
        pkg_version: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Overwrite the same version already in the target channel.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Save what a channel holds now under a name.
    Snapshot {
        channel: String,
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a channel's snapshots.
    Snapshots {
        channel: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a channel hold exactly what a snapshot held.
    Rollback {
        channel: String,
        snapshot: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Advisories of a channel's YUM repositories (`dnf updateinfo`, `dnf upgrade --security`).
    Advisory {
        #[command(subcommand)]
        cmd: AdvisoryCommand,
    },
    /// Sign every RPM (and debsig-signed .deb) of a channel again with its current key.
    Resign {
        channel: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Copy a channel's served repository into a directory (for rsync or a web server).
    Export {
        channel: String,
        dir: PathBuf,
        /// The master's config (the repository is read from its data_dir).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AdvisoryCommand {
    /// Publish an advisory for packages the channel holds.
    Add {
        channel: String,
        /// E.g. KILN-2026-0001.
        #[arg(long)]
        id: String,
        /// security, bugfix, enhancement or newpackage.
        #[arg(long = "type")]
        kind: String,
        /// Critical, Important, Moderate or Low.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A package name (its latest published version) or NAME-VERSION-RELEASE[.ARCH]; repeatable.
        #[arg(long = "package", required = true)]
        packages: Vec<String>,
        /// A URL (CVE record, bug, page); repeatable.
        #[arg(long = "reference")]
        references: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Take an advisory out of a channel (its repositories no longer carry it).
    Remove {
        channel: String,
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a channel's advisories.
    List {
        channel: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn repo(cmd: RepoCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RepoCommand::List { channel: None, remote, .. } => {
            let channels = remote.client()?.channels().await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&channels)?);
            } else {
                for c in channels {
                    println!(
                        "{:<12} {:<9} revision {:<4} {:>5} files  {}  key {}",
                        c.name, c.accepts, c.revision, c.packages, c.url, c.fingerprint
                    );
                }
            }
        }
        RepoCommand::List { channel: Some(channel), filter, target, remote } => {
            let pkgs = remote.client()?.packages(&channel, filter.as_deref(), target.as_deref()).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&pkgs)?);
            } else {
                for p in pkgs {
                    let build = p.build_id.map(|b| format!("build {b}")).unwrap_or_default();
                    println!("{:<24} {:<36} {:<8} {:<18} {build}", p.name, p.version, p.arch, p.repo);
                }
            }
        }
        RepoCommand::Remove { channel, name, pkg_version: version, remote } => {
            let r = remote.client()?.remove_package(&channel, &RemoveBody { name, version }).await?;
            println!("{}", r.message);
        }
        RepoCommand::Promote { name, pkg_version: version, from, to, replace, remote } => {
            let r = remote.client()?.promote(&PromoteBody { name, version, from, to, replace }).await?;
            println!("{}", r.message);
        }
        RepoCommand::Snapshot { channel, name, remote } => {
            println!("{}", remote.client()?.snapshot(&channel, &name).await?.message);
        }
        RepoCommand::Snapshots { channel, remote } => {
            for s in remote.client()?.snapshots(&channel).await? {
                println!("{:<24} {}  revision {:<4} {} files", s.name, s.created_at, s.revision, s.packages);
            }
        }
        RepoCommand::Rollback { channel, snapshot, remote } => {
            println!("{}", remote.client()?.rollback(&channel, &snapshot).await?.message);
        }
        RepoCommand::Advisory {
            cmd: AdvisoryCommand::Add { channel, id, kind, severity, title, description, packages, references, remote },
        } => {
            let body = AdvisoryBody { id, kind, severity, title, description, packages, references };
            println!("{}", remote.client()?.add_advisory(&channel, &body).await?.message);
        }
        RepoCommand::Advisory { cmd: AdvisoryCommand::Remove { channel, id, remote } } => {
            println!("{}", remote.client()?.remove_advisory(&channel, &id).await?.message);
        }
        RepoCommand::Advisory { cmd: AdvisoryCommand::List { channel, remote } } => {
            let list = remote.client()?.advisories(&channel).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for a in list {
                    let severity = a.severity.unwrap_or_default();
                    println!("{:<20} {:<11} {:<9} {}  {}", a.id, a.kind, severity, a.issued, a.title);
                    for p in a.packages {
                        println!("    {p}");
                    }
                }
            }
        }
        RepoCommand::Resign { channel, remote } => {
            println!("{}", remote.client()?.resign(&channel).await?.message);
        }
        RepoCommand::Export { channel, dir, config } => {
            let farm = kiln_master::farm::LoadedFarm::load(&config)?;
            if farm.cfg.channel(&channel).is_none() {
                anyhow::bail!("{}: no channel named {channel:?}", config.display());
            }
            let served = farm.data_dir().join("repos").join(&channel).join("current");
            let gen = std::fs::canonicalize(&served)
                .with_context(|| format!("channel {channel} has not been published yet ({})", served.display()))?;
            let n = export(&gen, &dir)?;
            println!("exported {n} files of channel {channel} to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a served tree, following its links (to the pool and the by-hash
/// store), by hard link where the file system allows; files are written
/// then renamed, modes 0644/0755. A by-hash file pruned by a publish while
/// the export runs is passed over: it was an older generation's.
fn export(from: &Path, to: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    let mut n = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        let (src, dest) = (e.path(), to.join(e.file_name()));
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let meta = match std::fs::metadata(&src) {
            Ok(meta) => meta, // follows symlinks
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        if meta.is_dir() {
            n += export(&src, &dest)?;
        } else {
            match kiln_repo::publish::place_file(&src, &dest) {
                Ok(()) => n += 1,
                Err(kiln_repo::RepoError::Io { source, .. }) if gone(&source) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(n)
}
