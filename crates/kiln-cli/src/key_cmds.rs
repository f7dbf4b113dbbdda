//! `kiln key ...`: making a channel signing key, extending one's expiry in
//! place, and rotating a channel to a new key. Extension and rotation work
//! on the master's config and key files, which the master watches: it
//! re-reads them and publishes the change (new public keys, indexes signed
//! again) by itself, without a restart.

use crate::Remote;
use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_core::channel::Channel;
use kiln_master::farm::LoadedFarm;
use kiln_repo::key::SigningKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a new OpenPGP signing key (RSA 4096 or Ed25519); writes FILE (secret, mode 0600) and FILE.pub.asc.
    Generate(GenerateArgs),
    /// Move a channel key's expiry (a new self-signature; same key, same fingerprint).
    Extend(ExtendArgs),
    /// Move a channel to a new key, both signing its indexes for a transition period.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The key's user ID, e.g. "Example Releases <releases@example.org>".
    #[arg(long)]
    name: String,
    #[arg(long)]
    out: PathBuf,
    /// Protect the key with the passphrase in this file (first line).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// rsa4096 (every client, RHEL 8's rpm included) or ed25519 (rpm 4.16+,
    /// apt, gpgv, librepo).
    #[arg(long = "type", default_value = "rsa4096", value_parser = kiln_core::channel::KeyAlgorithm::parse)]
    key_type: kiln_core::channel::KeyAlgorithm,
}

#[derive(Args)]
pub struct ExtendArgs {
    channel: String,
    /// The new expiry: a date (2028-01-01, midnight UTC), a UTC time
    /// (2028-01-01T12:00:00Z) or a span from now (730d).
    #[arg(long)]
    until: String,
    /// The master's config (the key file and its passphrase are found through it).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Args)]
pub struct RotateArgs {
    channel: String,
    /// The new key's secret key file (from `kiln key generate`, or gpg's export).
    #[arg(long)]
    new: PathBuf,
    /// The new key's passphrase file, when it has one.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// How long the old key keeps signing beside the new one.
    #[arg(long, default_value = "30d")]
    transition: String,
    /// The master's config, which is rewritten (kept as written elsewhere).
    #[arg(long, short)]
    config: PathBuf,
    /// Then sign every package of the channel again with the new key (waits
    /// for the master to take the new key first).
    #[arg(long)]
    resign: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Generate(a) => generate(a)?,
        KeyCommand::Extend(a) => extend(a)?,
        KeyCommand::Rotate(a) => rotate(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn read_passphrase(file: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let passphrase = a.passphrase_file.as_deref().map(read_passphrase).transpose()?;
    if a.out.exists() {
        anyhow::bail!("{} exists; not overwriting a key", a.out.display());
    }
    let key = SigningKey::generate(&a.name, passphrase.as_deref(), a.key_type)?;
    kiln_repo::fsio::write_atomic_mode(&a.out, key.secret_armored()?.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let public = PathBuf::from(format!("{}.pub.asc", a.out.display()));
    kiln_repo::publish::write_atomic(&public, key.public_armored()?.as_bytes())?;
    println!("secret key: {} (mode 0600)", a.out.display());
    println!("public key: {}", public.display());
    println!("fingerprint: {} ({})", key.fingerprint(), a.key_type.as_str());
    Ok(())
}

fn channel<'a>(farm: &'a LoadedFarm, config: &Path, name: &str) -> anyhow::Result<&'a Channel> {
    farm.cfg.channel(name).with_context(|| format!("{}: no channel named {name:?}", config.display()))
}

/// The file of channel `ch`'s current key, and the key loaded with its passphrase.
fn current_key(farm: &LoadedFarm, ch: &Channel) -> anyhow::Result<(PathBuf, SigningKey)> {
    let path = match &ch.key {
        Some(k) => farm.resolve(k),
        None => farm.generated_key_path(&ch.name),
    };
    let passphrase =
        ch.passphrase.as_ref().map(|r| farm.secret(r, &format!("channel {}'s passphrase", ch.name))).transpose()?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("channel {}: cannot read its key file {} (has the master started once?)", ch.name, path.display())
    })?;
    let key = SigningKey::from_armored(&text, passphrase.as_deref())
        .with_context(|| format!("channel {}: key file {}", ch.name, path.display()))?;
    Ok((path, key))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn extend(a: ExtendArgs) -> anyhow::Result<()> {
    let farm = LoadedFarm::load(&a.config)?;
    let ch = channel(&farm, &a.config, &a.channel)?;
    let now = now();
    let until = kiln_core::date::parse_date_or_span(&a.until, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    if until <= now {
        anyhow::bail!("--until: {} has passed", kiln_core::date::format_utc(until));
    }
    let (path, mut key) = current_key(&farm, ch)?;
    let was = key.expires_at();
    key.extend(until)?;
    kiln_repo::fsio::rewrite_keeping_owner(&path, key.secret_armored()?.as_bytes())
        .with_context(|| format!("cannot rewrite the key file {}", path.display()))?;
    println!(
        "channel {}: key {} now expires {} (was: {})",
        ch.name,
        key.fingerprint(),
        kiln_core::date::format_utc(until),
        was.map_or("never".to_string(), kiln_core::date::format_utc)
    );
    println!("the master reads the key file again within seconds and publishes it, with its indexes signed again");
    Ok(())
}

/// How the config names `path`: relative to the config's directory when
/// it is inside it, absolute otherwise.
fn as_config_names(farm: &LoadedFarm, path: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    let shown = absolute.strip_prefix(&farm.base_dir).unwrap_or(&absolute);
    shown.to_str().map(str::to_string).with_context(|| format!("{}: not a UTF-8 path", path.display()))
}

async fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let farm = LoadedFarm::load(&a.config)?;
    let ch = channel(&farm, &a.config, &a.channel)?.clone();
    let now = now();
    if let Some(p) = ch.previous_key.as_ref().filter(|p| p.in_effect(now)) {
        anyhow::bail!(
            "channel {} is still moving from the key in {} (it signs until {}); rotating again now would drop it \
             early: wait until then, or remove `previous_key` from the channel",
            ch.name,
            p.key,
            kiln_core::date::format_utc(p.until)
        );
    }
    let transition =
        kiln_core::duration::parse_duration(&a.transition).map_err(|e| anyhow::anyhow!("--transition: {e}"))?.as_secs();
    if transition < 3600 {
        anyhow::bail!("--transition: at least an hour, so clients can learn the new key");
    }
    let until = now.checked_add(transition).context("--transition is too long")?;
    let (old_path, old) = current_key(&farm, &ch)?;
    let passphrase = a.passphrase_file.as_deref().map(read_passphrase).transpose()?;
    let new_text = std::fs::read_to_string(&a.new).with_context(|| format!("cannot read {}", a.new.display()))?;
    let new = SigningKey::from_armored(&new_text, passphrase.as_deref())
        .with_context(|| format!("the new key {}", a.new.display()))?;
    if new.fingerprint() == old.fingerprint() {
        anyhow::bail!("{} is the channel's current key ({})", a.new.display(), old.fingerprint());
    }
    if new.expires_at().is_some_and(|at| at <= until) {
        anyhow::bail!("the new key expires before the transition ends: extend it first");
    }
    if old.expires_at().is_some_and(|at| at <= until) {
        eprintln!("note: the old key expires before the transition ends; clients that know only it stop updating then");
    }
    // The master reads these files as the user that owns the current key.
    for file in std::iter::once(&a.new).chain(&a.passphrase_file) {
        readable_by_owner_of(file, &old_path)?;
    }
    let new_key = as_config_names(&farm, &a.new)?;
    let new_passphrase_file = a.passphrase_file.as_deref().map(|f| as_config_names(&farm, f)).transpose()?;
    let old_key = match &ch.key {
        Some(k) => k.clone(),
        None => as_config_names(&farm, &old_path)?,
    };
    let rotation = kiln_core::config::rotate::Rotation {
        channel: &ch.name,
        new_key: &new_key,
        new_passphrase_file: new_passphrase_file.as_deref(),
        old_key: &old_key,
        until,
    };
    let text = kiln_core::config::rotate::rotate_channel_key(&farm.text, &rotation)
        .with_context(|| format!("cannot rotate in {}", a.config.display()))?;
    // The master would refuse a config that does not load; so does this.
    LoadedFarm::from_text(&a.config, text.clone()).context("the rotated config does not load")?;
    kiln_repo::fsio::rewrite_keeping_owner(&a.config, text.as_bytes())
        .with_context(|| format!("cannot rewrite {}", a.config.display()))?;
    println!(
        "channel {}: key {} signs from now on; {} signs its indexes too until {}",
        ch.name,
        new.fingerprint(),
        old.fingerprint(),
        kiln_core::date::format_utc(until)
    );
    println!("{} names both (previous_key); the master reloads it within a second", a.config.display());
    if a.resign {
        let client = a.remote.client()?;
        wait_for_key(&client, &ch.name, &new.fingerprint()).await?;
        println!("{}", client.resign(&ch.name).await?.message);
    }
    Ok(())
}

/// Fails when `file` is not readable by the owner of `reference` (the
/// master's user, who owns the channel's current key file): a new key made
/// as root would otherwise leave the channel unable to sign.
fn readable_by_owner_of(file: &Path, reference: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (f, r) = (
        std::fs::metadata(file).with_context(|| format!("{}", file.display()))?,
        std::fs::metadata(reference).with_context(|| format!("{}", reference.display()))?,
    );
    let readable = f.uid() == r.uid() || (f.gid() == r.gid() && f.mode() & 0o040 != 0) || f.mode() & 0o004 != 0;
    if !readable {
        anyhow::bail!(
            "{} (owner {}, mode {:o}) is not readable by the master's user (uid {}, the owner of {}): chown it first",
            file.display(),
            f.uid(),
            f.mode() & 0o777,
            r.uid(),
            reference.display()
        );
    }
    Ok(())
}

/// Waits (a minute at most) until the master signs channel `name` with key `fingerprint`.
async fn wait_for_key(client: &kiln_client::Client, name: &str, fingerprint: &str) -> anyhow::Result<()> {
    for _ in 0..240 {
        let channels = client.channels().await?;
        if channels.iter().any(|c| c.name == name && c.fingerprint == fingerprint) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    anyhow::bail!("the master has not taken the new key of channel {name} within a minute; see its log")
}
