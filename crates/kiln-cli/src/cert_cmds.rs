//! `kiln cert ...`: a small CA for a farm's TLS (rcgen). Keep two CAs: one
//! for workers, one for users, so a user's certificate can never connect as
//! a worker. Private keys are written 0600, write-then-rename.

use anyhow::{bail, Context};
use clap::{ArgGroup, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make a certificate authority: OUT/ca.pem and OUT/ca.key (0600).
    Ca {
        /// The CA's name, e.g. "example workers".
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Years the CA is valid.
        #[arg(long, default_value_t = 10)]
        years: u32,
    },
    /// Issue a certificate from a CA: OUT/NAME.pem and OUT/NAME.key (0600).
    #[command(group(ArgGroup::new("for").required(true).args(["worker", "user", "server"])))]
    Issue {
        /// The CA's directory (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// A worker's client certificate (its common name is the worker's name).
        #[arg(long)]
        worker: Option<String>,
        /// A user's client certificate (their email address).
        #[arg(long)]
        user: Option<String>,
        /// The master's server certificate for these host names or addresses (comma-separated).
        #[arg(long, value_delimiter = ',')]
        server: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

pub fn cert(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Ca { name, out, years } => {
            let key = KeyPair::generate().context("cannot make a key")?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name_of(&name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            (params.not_before, params.not_after) = validity(u64::from(years) * 365);
            let cert = params.self_signed(&key).context("cannot sign the CA certificate")?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            write_file(&out.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&out.join("ca.pem"), cert.pem().as_bytes(), 0o644)?;
            println!("{}", out.join("ca.pem").display());
        }
        CertCommand::Issue { ca, worker, user, server, out, days } => {
            let ca_pem = std::fs::read_to_string(ca.join("ca.pem"))
                .with_context(|| format!("cannot read {}", ca.join("ca.pem").display()))?;
            let ca_key = KeyPair::from_pem(
                &std::fs::read_to_string(ca.join("ca.key"))
                    .with_context(|| format!("cannot read {}", ca.join("ca.key").display()))?,
            )
            .context("ca.key is not a private key")?;
            let issuer = CertificateParams::from_ca_cert_pem(&ca_pem)
                .context("ca.pem is not a CA certificate")?
                .self_signed(&ca_key)
                .context("ca.key does not fit ca.pem")?;
            let mut params = CertificateParams::default();
            let file = if let Some(w) = worker {
                kiln_core::names::check_name(&w).map_err(|e| anyhow::anyhow!("worker {w:?}: {e}"))?;
                params.distinguished_name = name_of(&w);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                w
            } else if let Some(u) = user {
                kiln_core::perm::check_email(&u).map_err(anyhow::Error::msg)?;
                params.distinguished_name = name_of(&u);
                params.subject_alt_names = vec![SanType::Rfc822Name(u.clone().try_into()?)];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                u
            } else {
                if server.is_empty() {
                    bail!("--server needs at least one host name or address");
                }
                params.distinguished_name = name_of(&server[0]);
                for host in &server {
                    params.subject_alt_names.push(match host.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(host.clone().try_into().with_context(|| format!("{host:?}"))?),
                    });
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                server[0].clone()
            };
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            (params.not_before, params.not_after) = validity(u64::from(days));
            let key = KeyPair::generate().context("cannot make a key")?;
            let cert = params.signed_by(&key, &issuer, &ca_key).context("cannot sign the certificate")?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let stem: String =
                file.chars().map(|c| if c.is_ascii_alphanumeric() || "@.-_".contains(c) { c } else { '_' }).collect();
            write_file(&out.join(format!("{stem}.key")), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&out.join(format!("{stem}.pem")), cert.pem().as_bytes(), 0o644)?;
            println!("{}", out.join(format!("{stem}.pem")).display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn name_of(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(days: u64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + time::Duration::days(days as i64))
}

/// Writes a file whole (a temporary name, then rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    kiln_repo::fsio::write_atomic_mode(path, bytes, mode).with_context(|| format!("cannot write {}", path.display()))
}
