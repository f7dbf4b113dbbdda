//! `kiln bench-repo`: repository index generation, side by side with the
//! tools teams use today, on the same package set; JSON out.
//!
//! Makes N small but real `.deb` and `.rpm` packages, then times:
//! - a full index: kiln reading every package and writing signed indexes,
//!   against `apt-ftparchive` (+ `release`), `reprepro` and `createrepo_c`;
//! - one package added to the N-package repository: kiln (read the new
//!   package, load the N stored index entries, render, sign, switch), against
//!   `createrepo_c --update` and `apt-ftparchive` over the grown pool.
//!
//! Tools that are not installed are reported as absent, not guessed.

use anyhow::Context;
use clap::Args;
use kiln_repo::apt::{Dist, ReleaseMeta};
use kiln_repo::deb::DebEntry;
use kiln_repo::hash::file_sums;
use kiln_repo::key::{Signers, SigningKey};
use kiln_repo::publish::{ChannelContent, ChannelDir, YumRepo};
use kiln_repo::yum::RpmEntry;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

#[derive(Args)]
pub struct BenchRepoArgs {
    /// Packages in the repository (of each kind).
    #[arg(long, default_value_t = 10_000)]
    pub packages: usize,
    /// Runs of each timing; the report gives the median.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Work directory (packages are made once and kept here).
    #[arg(long, default_value = "bench-repo")]
    pub dir: PathBuf,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-repo.json")]
    pub out: PathBuf,
    /// Time only adding one package (no full indexes, no other tools).
    #[arg(long)]
    pub add_only: bool,
    /// The signing key's type (a channel's default is RSA 4096).
    #[arg(long = "key-type", default_value = "rsa4096", value_parser = kiln_core::channel::KeyAlgorithm::parse)]
    pub key_type: kiln_core::channel::KeyAlgorithm,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `f` `rounds` times; the median in milliseconds.
fn time_ms(rounds: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(v))
}

/// Runs a tool with its stdout in `file`.
fn sh_to(cmd: &mut Command, file: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(file)?;
    let st = cmd.stdout(f).status().context("cannot run a tool")?;
    anyhow::ensure!(st.success(), "{:?} failed", cmd.get_program());
    Ok(())
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().context("cannot run a tool")?;
    if !out.status.success() {
        anyhow::bail!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A minimal valid `.deb`: ar(debian-binary, control.tar.gz, data.tar.gz).
fn make_deb(path: &Path, name: &str, version: &str) -> anyhow::Result<()> {
    fn tar_gz(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
        let mut t = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            t.append_data(&mut h, p, *data)?;
        }
        Ok(t.into_inner()?.finish()?)
    }
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: kiln bench <bench@localhost>\n\
         Installed-Size: 1\nDepends: libc6 (>= 2.36)\nSection: misc\nPriority: optional\n\
         Description: benchmark package {name}\n A package made by kiln bench-repo.\n"
    );
    let control_tgz = tar_gz(&[("./control", control.as_bytes())])?;
    let readme = format!("{name} {version}\n");
    let data_tgz = tar_gz(&[(&format!("./usr/share/doc/{name}/README"), readme.as_bytes())])?;
    let mut out = b"!<arch>\n".to_vec();
    for (member, data) in
        [("debian-binary", &b"2.0\n"[..]), ("control.tar.gz", &control_tgz), ("data.tar.gz", &data_tgz)]
    {
        out.extend_from_slice(
            format!("{member:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 100644, data.len()).as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn make_rpm(path: &Path, name: &str, version: &str) -> anyhow::Result<()> {
    // gzip: the builder's default (zstd at a high level) makes each tiny package cost ~50 ms.
    let mut b = rpm::PackageBuilder::new(name, version, "MIT", "x86_64", "benchmark package");
    b.using_config(rpm::BuildConfig::default().compression(rpm::CompressionType::Gzip));
    b.description("A package made by kiln bench-repo.").release("1");
    b.with_file_contents(
        format!("{name} {version}\n"),
        rpm::FileOptions::new(format!("/usr/share/doc/{name}/README")),
    )?;
    b.with_file_contents("#!/bin/sh\n", rpm::FileOptions::new(format!("/usr/bin/{name}")).mode(0o100755))?;
    b.requires(rpm::Dependency::greater_eq("glibc", "2.34"));
    let pkg = b.build()?;
    pkg.write_file(path)?;
    Ok(())
}

/// The packages, made once.
fn ensure_packages(dir: &Path, n: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (debs, rpms) = (dir.join("pool/debs"), dir.join("pool/rpms"));
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&rpms)?;
    let count = |d: &Path, ext: &str| -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(d)?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == ext)).count())
    };
    let (have_debs, have_rpms) = (count(&debs, "deb")?, count(&rpms, "rpm")?);
    if have_debs != n || have_rpms != n {
        eprintln!("kiln bench-repo: making {n} .deb and {n} .rpm packages in {}", dir.display());
        for d in [&debs, &rpms] {
            std::fs::remove_dir_all(d)?;
            std::fs::create_dir_all(d)?;
        }
        for i in 0..n {
            let name = format!("bench-pkg{i:05}");
            make_deb(&debs.join(format!("{name}_1.0-1_amd64.deb")), &name, "1.0-1")?;
            make_rpm(&rpms.join(format!("{name}-1.0-1.x86_64.rpm")), &name, "1.0")?;
        }
    }
    Ok((debs, rpms))
}

fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    Ok(v)
}

/// Reads every package on two threads (kiln's full-index read), as JSON
/// entries the way the publisher stores them.
fn read_all<T: Send>(files: &[PathBuf], read: impl Fn(&Path) -> anyhow::Result<T> + Sync) -> anyhow::Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            files.chunks(chunk).map(|c| s.spawn(|| c.iter().map(|p| read(p)).collect::<Vec<_>>())).collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            for r in h.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))? {
                out.push(r?);
            }
        }
        Ok(out)
    })
}

fn deb_entry(p: &Path) -> anyhow::Result<DebEntry> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sums = file_sums(p)?;
    Ok(kiln_repo::deb::inspect_deb(p, &format!("pool/main/b/{name}"), &sums)?)
}

fn rpm_entry(p: &Path) -> anyhow::Result<RpmEntry> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // YUM's repodata lists an RPM's SHA-256 only (as createrepo_c computes).
    let (size, sha256) = kiln_repo::hash::file_sha256(p)?;
    Ok(kiln_repo::yum::inspect_rpm(p, &format!("Packages/{name}"), &sha256, size, 0)?)
}

/// Stored rows as the publisher hands them to its entry cache.
fn as_rows(rows: &[(i64, String)]) -> Vec<(i64, &str)> {
    rows.iter().map(|(id, t)| (*id, t.as_str())).collect()
}

/// Adding one package to a channel of the `stored` entries, `rounds` times
/// in a row: round `i` adds a package of its own (`new_entry(i)`) to the
/// channel the round before left, so each generation is a real change from
/// the one before. The new package is read and stored as a row of its own,
/// the channel's entries are loaded as the publisher does (its
/// `EntryCache`, warmed first as a running master has it: only the new row
/// is parsed), and `write` makes the generation. The medians, ms: in all,
/// and of loading the entries.
fn add_one<T: serde::Serialize + serde::de::DeserializeOwned + Send>(
    rounds: usize,
    stored: &[String],
    new_entry: impl Fn(usize) -> anyhow::Result<T>,
    mut write: impl FnMut(Vec<&T>) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let bad = |(i, e): (usize, serde_json::Error)| anyhow::anyhow!("entry {i}: {e}");
    let mut rows: Vec<(i64, String)> = stored.iter().enumerate().map(|(i, t)| (i as i64 + 1, t.clone())).collect();
    let mut cache = kiln_repo::stored::EntryCache::<T>::default();
    cache.load(&as_rows(&rows)).map_err(bad)?;
    let mut round = 0;
    let mut loading = Vec::new();
    let total = time_ms(rounds, || {
        rows.push((1_000_000 + round as i64, serde_json::to_string(&new_entry(round)?)?));
        round += 1;
        let t = Instant::now();
        let entries = cache.load(&as_rows(&rows)).map_err(bad)?;
        loading.push(t.elapsed().as_secs_f64() * 1000.0);
        write(entries.iter().map(AsRef::as_ref).collect())
    })?;
    Ok((total, median(loading)))
}

fn content<'a>(debs: Vec<&'a DebEntry>, rpms: Vec<&'a RpmEntry>) -> ChannelContent<'a> {
    ChannelContent {
        meta: ReleaseMeta {
            origin: "kiln".into(),
            label: "bench".into(),
            description: "bench".into(),
            valid_until: None,
        },
        apt: if debs.is_empty() {
            vec![]
        } else {
            vec![Dist {
                suite: "bookworm".into(),
                component: "main".into(),
                archs: ["amd64".to_string()].into(),
                binaries: debs,
                sources: vec![],
            }]
        },
        yum: if rpms.is_empty() {
            vec![]
        } else {
            vec![YumRepo { target: "el-9-x86_64".into(), entries: rpms, updateinfo: None }]
        },
    }
}

const DATE: &str = "Sun, 22 Nov 2026 10:00:00 UTC";

pub fn run(args: BenchRepoArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir)?;
    let (deb_dir, rpm_dir) = ensure_packages(dir, args.packages)?;
    let debs = files_in(&deb_dir)?;
    let rpms = files_in(&rpm_dir)?;
    let key = Signers::new(
        std::sync::Arc::new(SigningKey::generate("kiln bench <bench@localhost>", None, args.key_type)?),
        None,
    );
    let rounds = args.rounds;
    let mut report = serde_json::Map::new();
    report.insert("packages".into(), json!(args.packages));
    report.insert("rounds".into(), json!(rounds));
    report.insert("key_type".into(), json!(args.key_type.as_str()));
    report.insert("cpus".into(), json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));

    let out = dir.join("kiln-apt");
    let yout = dir.join("kiln-yum");
    let mut gen = 0;
    let createrepo = crate::on_path("createrepo_c") && !args.add_only;
    let (mut kiln_apt_full, mut kiln_yum_full) = (f64::NAN, f64::NAN);
    if !args.add_only {
        // --- APT, full index ---
        // Full runs start from nothing: no earlier generation, no cached pieces.
        // Of each run, the time reading the packages (the rest is
        // indexing, signing and writing the generation to disk, synced).
        let mut reading = Vec::new();
        kiln_apt_full = time_ms(rounds, || {
            let _ = std::fs::remove_dir_all(&out);
            let t = Instant::now();
            let entries = read_all(&debs, deb_entry)?;
            reading.push(t.elapsed().as_secs_f64() * 1000.0);
            gen += 1;
            ChannelDir::new(&out).write_generation(gen, "", &content(entries.iter().collect(), vec![]), &key, DATE)?;
            Ok(())
        })?;
        report.insert("apt_full_kiln_ms".into(), json!(kiln_apt_full));
        report.insert("apt_full_kiln_reading_packages_ms".into(), json!(median(reading)));
        if crate::on_path("apt-ftparchive") {
            let ms = time_ms(rounds, || {
                sh_to(
                    Command::new("apt-ftparchive").arg("packages").arg("pool/debs").current_dir(dir),
                    &dir.join("ftp-Packages"),
                )?;
                sh_to(
                    Command::new("gzip").args(["-c", "ftp-Packages"]).current_dir(dir),
                    &dir.join("ftp-Packages.gz"),
                )?;
                sh_to(Command::new("xz").args(["-c", "ftp-Packages"]).current_dir(dir), &dir.join("ftp-Packages.xz"))?;
                sh_to(Command::new("apt-ftparchive").arg("release").arg(".").current_dir(dir), &dir.join("ftp-Release"))
            })?;
            report.insert("apt_full_apt_ftparchive_ms".into(), json!(ms));
        } else {
            report.insert("apt_full_apt_ftparchive_ms".into(), json!(null));
        }
        if crate::on_path("reprepro") {
            let base = dir.join("reprepro");
            let ms = time_ms(1, || {
                let _ = std::fs::remove_dir_all(&base);
                std::fs::create_dir_all(base.join("conf"))?;
                std::fs::write(
                    base.join("conf/distributions"),
                    "Codename: bookworm\nArchitectures: amd64\nComponents: main\n",
                )?;
                let mut cmd = Command::new("reprepro");
                cmd.arg("-b").arg(&base).args(["--export=never", "includedeb", "bookworm"]).args(&debs);
                sh(&mut cmd)?;
                sh(Command::new("reprepro").arg("-b").arg(&base).arg("export"))?;
                Ok(())
            })?;
            report.insert("apt_full_reprepro_ms".into(), json!(ms));
        } else {
            report.insert("apt_full_reprepro_ms".into(), json!(null));
        }

        // --- YUM, full index ---
        // Of each run, the time reading the packages (the rest is
        // indexing, signing and writing the generation to disk, synced).
        let mut reading = Vec::new();
        kiln_yum_full = time_ms(rounds, || {
            let _ = std::fs::remove_dir_all(&yout);
            let t = Instant::now();
            let entries = read_all(&rpms, rpm_entry)?;
            reading.push(t.elapsed().as_secs_f64() * 1000.0);
            gen += 1;
            ChannelDir::new(&yout).write_generation(gen, "", &content(vec![], entries.iter().collect()), &key, DATE)?;
            Ok(())
        })?;
        report.insert("yum_full_kiln_ms".into(), json!(kiln_yum_full));
        report.insert("yum_full_kiln_reading_packages_ms".into(), json!(median(reading)));
        if createrepo {
            let ms = time_ms(rounds, || {
                let _ = std::fs::remove_dir_all(rpm_dir.join("repodata"));
                sh(Command::new("createrepo_c").arg("--quiet").arg(&rpm_dir))
            })?;
            report.insert("yum_full_createrepo_c_ms".into(), json!(ms));
        } else {
            report.insert("yum_full_createrepo_c_ms".into(), json!(null));
        }
    }
    // --- One package added to the N-package repository ---
    // kiln stores each entry as JSON when a package is published; adding one
    // reads the new package, loads the channel's entries (the new one parsed,
    // the others kept from the last generation, as the publisher does),
    // renders, signs and switches.
    let stored_debs: Vec<String> =
        read_all(&debs, deb_entry)?.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    let stored_rpms: Vec<String> =
        read_all(&rpms, rpm_entry)?.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    // A package of its own for each round (made before the timing).
    let extra_debs: Vec<PathBuf> = (0..rounds.max(1)).map(|i| dir.join(format!("extra{i}_1.0-1_amd64.deb"))).collect();
    let extra_rpms: Vec<PathBuf> = (0..rounds.max(1)).map(|i| dir.join(format!("extra{i}-1.0-1.x86_64.rpm"))).collect();
    for (i, (deb, rpm)) in extra_debs.iter().zip(&extra_rpms).enumerate() {
        make_deb(deb, &format!("bench-extra{i}"), "1.0-1")?;
        make_rpm(rpm, &format!("bench-extra{i}"), "1.0")?;
    }
    let (apt_add, apt_loading) = add_one(
        rounds,
        &stored_debs,
        |i| deb_entry(&extra_debs[i]),
        |entries| {
            gen += 1;
            Ok(ChannelDir::new(&out).write_generation(gen, "", &content(entries, vec![]), &key, DATE).map(drop)?)
        },
    )?;
    report.insert("apt_add_one_kiln_ms".into(), json!(apt_add));
    report.insert("apt_add_one_kiln_loading_entries_ms".into(), json!(apt_loading));
    let (yum_add, yum_loading) = add_one(
        rounds,
        &stored_rpms,
        |i| rpm_entry(&extra_rpms[i]),
        |entries| {
            gen += 1;
            Ok(ChannelDir::new(&yout).write_generation(gen, "", &content(vec![], entries), &key, DATE).map(drop)?)
        },
    )?;
    report.insert("yum_add_one_kiln_ms".into(), json!(yum_add));
    report.insert("yum_add_one_kiln_loading_entries_ms".into(), json!(yum_loading));
    if createrepo {
        let added = rpm_dir.join("bench-extra-1.0-1.x86_64.rpm");
        // Only the update that finds the new package is timed, not the reset before it.
        let mut v = Vec::new();
        for _ in 0..rounds.max(1) {
            let _ = std::fs::remove_file(&added);
            sh(Command::new("createrepo_c").args(["--quiet", "--update"]).arg(&rpm_dir))?;
            std::fs::copy(&extra_rpms[0], &added)?;
            let t = Instant::now();
            sh(Command::new("createrepo_c").args(["--quiet", "--update"]).arg(&rpm_dir))?;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = std::fs::remove_file(&added);
        report.insert("yum_add_one_createrepo_c_update_ms".into(), json!(median(v)));
    }
    let fastest = |keys: &[&str]| {
        keys.iter().filter_map(|k| report.get(*k).and_then(|v| v.as_f64())).fold(f64::INFINITY, f64::min)
    };
    let apt_best = fastest(&["apt_full_apt_ftparchive_ms", "apt_full_reprepro_ms"]);
    let yum_best = fastest(&["yum_full_createrepo_c_ms"]);
    if apt_best.is_finite() {
        report.insert("apt_full_speedup_vs_fastest".into(), json!(apt_best / kiln_apt_full));
    }
    if yum_best.is_finite() {
        report.insert("yum_full_speedup_vs_fastest".into(), json!(yum_best / kiln_yum_full));
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
    let mut f = std::fs::File::create(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(f, "{text}")?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
