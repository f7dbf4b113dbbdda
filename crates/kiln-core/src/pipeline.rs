//! The standard pipelines: the steps a component without `steps` gets on a
//! target of its family. They are ordinary steps whose commands call the
//! worker's own `kiln internal ...` helpers, so they show, log, time out and
//! cancel like any other step.

use crate::config::{Component, Executor, Family, StepSpec, Target, VcsSource};
use std::time::Duration;

/// The names of the steps kiln's own pipelines use; the config model owns
/// the list, since it keeps components' own steps off these names.
pub use crate::config::STEP_NAMES;

/// Where the standard pipelines leave what they produce, relative to the
/// build's work dir; their artifacts are everything in it.
pub const OUTPUT_DIR: &str = ".kiln-out";

pub use crate::props::sh_quote;

/// Where a standard pipeline's build helper puts the build tree's logs
/// when the build fails, relative to the work dir.
pub const FAILURE_DIR: &str = ".kiln-failed";

/// What every artifact kept from a failed build is named with first, so
/// it is never taken for a package the build made.
pub const FAILURE_PREFIX: &str = "failed-";

/// The logs the standard pipelines keep from a failed build's tree, besides
/// a component's own `artifacts_on_failure`: autoconf's, CMake's, meson's
/// and the usual test-suite logs.
pub const DEFAULT_FAILURE_LOGS: &[&str] = &[
    "**/config.log",
    "**/CMakeFiles/CMakeOutput.log",
    "**/CMakeFiles/CMakeError.log",
    "**/CMakeFiles/CMakeConfigureLog.yaml",
    "**/meson-logs/meson-log.txt",
    "**/meson-logs/testlog.txt",
    "**/test-suite.log",
    "**/testsuite.log",
    "**/Testing/Temporary/LastTest.log",
];

/// The artifact name of a file kept from a failed build, from its path
/// relative to the work dir: the path below [`FAILURE_DIR`] (or the whole
/// path), `/` turned into `_`, after [`FAILURE_PREFIX`]. `None` when no
/// valid name comes of it.
pub fn failure_artifact_name(rel: &str) -> Option<String> {
    let below = rel.strip_prefix(FAILURE_DIR).and_then(|r| r.strip_prefix('/')).unwrap_or(rel);
    let name = format!("{FAILURE_PREFIX}{}", below.replace('/', "_"));
    crate::names::valid_artifact_name(&name).then_some(name)
}

fn step(name: &str, run: String, timeout: Option<Duration>) -> StepSpec {
    StepSpec {
        name: name.to_string(),
        run,
        set_property: None,
        timeout,
        no_output_timeout: None,
        env: Default::default(),
        halt_on_failure: true,
        always_run: false,
    }
}

/// The step that puts a git or Mercurial source's tree in the work dir: the revision the
/// build names (property `revision`), else the tip of its branch (property
/// `branch`, else the configured one). It sets `got_revision` to the full
/// commit id, so every build says exactly what it built.
pub fn checkout_step(git: &VcsSource) -> StepSpec {
    let mut run = format!(
        "exec \"$KILN_EXE\" internal {}-checkout --url {} --branch {}",
        git.vcs.as_str(),
        sh_quote(&git.url),
        sh_quote(&git.branch)
    );
    if let Some(dir) = &git.subdir {
        run.push_str(&format!(" --subdir {}", sh_quote(dir)));
    }
    if git.submodules {
        run.push_str(" --submodules");
    }
    let mut s = step("checkout", run, Some(Duration::from_secs(1800)));
    s.set_property = Some(crate::props::GOT_REVISION.into());
    s
}

/// The steps of the standard pipeline for `component` on `target`, and the
/// artifact patterns that go with them.
pub fn standard_steps(target: &Target, component: &Component) -> Result<(Vec<StepSpec>, Vec<String>), String> {
    match target.family {
        Family::Deb => {
            let (Some(suite), Some(mirror)) = (&target.suite, &target.mirror) else {
                return Err(format!("target {} needs `suite` and `mirror` for the standard deb pipeline", target.name));
            };
            let mut root = format!(
                "exec \"$KILN_EXE\" internal deb-root --suite {} --mirror {} --components {} --max-age {}",
                sh_quote(suite),
                sh_quote(mirror),
                sh_quote(&target.components.join(",")),
                target.max_age.as_secs()
            );
            for more in &target.suites {
                root.push_str(&format!(" --also {}", sh_quote(&format!("{} {}", more.mirror, more.suite))));
            }
            if let Some(arch) = &target.arch {
                root.push_str(&format!(" --arch {}", sh_quote(arch)));
            }
            let deps =
                format!("exec \"$KILN_EXE\" internal deb-deps --lists-max-age {}", target.lists_max_age.as_secs());
            let executor = target.executor.as_str();
            let hour = Some(Duration::from_secs(3600));
            // The entry kiln writes for a nightly names the target's suite.
            let mut source = format!(
                "exec \"$KILN_EXE\" internal deb-source --distribution {} --orig {}",
                sh_quote(suite),
                component.orig.source.as_str()
            );
            if component.orig.upstream_tag != crate::config::OrigRule::default().upstream_tag {
                source.push_str(&format!(" --upstream-tag {}", sh_quote(&component.orig.upstream_tag)));
            }
            let mut source = step("source", source, Some(Duration::from_secs(600)));
            source.set_property = Some("version".into());
            let mut steps = vec![source];
            match target.executor {
                Executor::Bwrap => {
                    steps.push(step("root", root, hour));
                    steps.push(step("deps", deps, hour));
                }
                // sbuild unpacks the cached tarball itself and installs the
                // build dependencies as part of its run.
                Executor::Sbuild => steps.push(step("root", root + " --tarball-only", hour)),
                Executor::Host | Executor::Mock => {}
            }
            let mut build = format!("exec \"$KILN_EXE\" internal deb-build --executor {executor}");
            push_keep_on_failure(&mut build, component);
            if target.executor == Executor::Sbuild {
                // sbuild names the distribution in the .changes it writes.
                build.push_str(&format!(" --suite {}", sh_quote(suite)));
                if let Some(arch) = &target.arch {
                    build.push_str(&format!(" --arch {}", sh_quote(arch)));
                }
            }
            steps.push(step("build", build, None));
            Ok((steps, vec![format!("{OUTPUT_DIR}/*")]))
        }
        Family::Rpm => {
            let mut run = "exec \"$KILN_EXE\" internal rpm-source".to_string();
            if let Some(spec) = &component.spec {
                run.push_str(&format!(" --spec {}", sh_quote(spec)));
            }
            let mut source = step("source", run, Some(Duration::from_secs(600)));
            source.set_property = Some("version".into());
            let mut build = format!("exec \"$KILN_EXE\" internal rpm-build --executor {}", target.executor.as_str());
            push_keep_on_failure(&mut build, component);
            if let (Executor::Mock, Some(config)) = (target.executor, &target.mock_config) {
                build.push_str(&format!(" --mock-config {}", sh_quote(config)));
            }
            Ok((vec![source, step("build", build, None)], vec![format!("{OUTPUT_DIR}/*")]))
        }
    }
}

/// A component's own `artifacts_on_failure`, for the build helper.
fn push_keep_on_failure(run: &mut String, component: &Component) {
    for pattern in &component.artifacts_on_failure {
        run.push_str(&format!(" --keep-on-failure={}", sh_quote(pattern)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn deb_pipeline_steps() {
        let cfg = parse(
            "[[target]]\nname = \"d12\"\nfamily = \"deb\"\nsuite = \"bookworm\"\narch = \"amd64\"\nmirror = \"http://deb.example.org/debian\"\n\
             [[component]]\nname = \"hello\"\n",
        )
        .expect("parses");
        let (steps, artifacts) = standard_steps(&cfg.targets[0], &cfg.components[0]).expect("pipeline");
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["source", "root", "deps", "build"]);
        assert_eq!(
            steps[1].run,
            "exec \"$KILN_EXE\" internal deb-root --suite 'bookworm' --mirror 'http://deb.example.org/debian' \
             --components 'main' --max-age 1296000 --arch 'amd64'"
        );
        assert_eq!(steps[0].set_property.as_deref(), Some("version"));
        assert_eq!(artifacts, [".kiln-out/*"]);
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn a_target_with_more_suites_and_its_own_lists_age() {
        let cfg = parse(
            "[[target]]\nname = \"d12\"\nfamily = \"deb\"\nmirror = \"http://deb.example.org/debian\"\n\
             suites = [\"bookworm\", \"bookworm-updates\", { suite = \"bookworm-security\", mirror = \"http://security.example.org/debian-security\" }]\n\
             lists_max_age = \"30m\"\n[[component]]\nname = \"hello\"\n",
        )
        .expect("parses");
        let t = &cfg.targets[0];
        assert_eq!(t.suite.as_deref(), Some("bookworm"), "the first of `suites` is the target's suite");
        let more: Vec<(&str, &str)> = t.suites.iter().map(|s| (s.suite.as_str(), s.mirror.as_str())).collect();
        assert_eq!(
            more,
            [
                ("bookworm-updates", "http://deb.example.org/debian"),
                ("bookworm-security", "http://security.example.org/debian-security")
            ]
        );
        let (steps, _) = standard_steps(t, &cfg.components[0]).expect("pipeline");
        assert_eq!(
            steps[1].run,
            "exec \"$KILN_EXE\" internal deb-root --suite 'bookworm' --mirror 'http://deb.example.org/debian' \
             --components 'main' --max-age 1296000 --also 'http://deb.example.org/debian bookworm-updates' \
             --also 'http://security.example.org/debian-security bookworm-security'"
        );
        assert_eq!(steps[2].run, "exec \"$KILN_EXE\" internal deb-deps --lists-max-age 1800");
        // `host`: each worker's own mirror, resolved on the worker.
        let cfg = parse("[[target]]\nname = \"d\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"host\"\n[[component]]\nname = \"x\"\n")
            .expect("parses");
        let (steps, _) = standard_steps(&cfg.targets[0], &cfg.components[0]).expect("pipeline");
        assert!(steps[1].run.contains("--mirror 'host'"), "{}", steps[1].run);
        let err =
            parse("[[target]]\nname = \"d\"\nfamily = \"deb\"\nmirror = \"hots\"\n").expect_err("typo").to_string();
        assert!(err.contains("(or \"host\": each worker's own)"), "{err}");
        for (bad, says) in [
            ("suites = [\"bookworm\", 3]", "must be a suite name or a { suite, mirror } table"),
            ("suites = [{ suite = \"x y\" }]", "`suites` of [[target]]"),
            ("suites = [{ suite = \"x\", mirror = \"ftp://x\" }]", "must be an http(s):// or file:/ URL"),
            ("suites = [{ suit = \"x\" }]", "suit"),
        ] {
            let text = format!(
                "[[target]]\nname = \"d12\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"http://m.example.org/\"\n{bad}\n"
            );
            let err = parse(&text).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err =
            parse("[[target]]\nname = \"el\"\nfamily = \"rpm\"\nsuites = [\"x\"]\n").expect_err("rpm").to_string();
        assert!(err.contains("for deb targets only"), "{err}");
    }

    #[test]
    fn failure_artifacts_are_named_apart_from_packages() {
        assert_eq!(failure_artifact_name(".kiln-failed/config.log").as_deref(), Some("failed-config.log"));
        assert_eq!(
            failure_artifact_name(".kiln-failed/obj/CMakeFiles/CMakeError.log").as_deref(),
            Some("failed-obj_CMakeFiles_CMakeError.log")
        );
        assert_eq!(failure_artifact_name("tests/run.log").as_deref(), Some("failed-tests_run.log"));
        assert_eq!(failure_artifact_name("a b.log"), None);
        assert!(!crate::job::is_package("failed-hello_1.0_amd64.deb"));
        let cfg = parse(
            "[[target]]\nname = \"el9\"\nfamily = \"rpm\"\n[[component]]\nname = \"hello\"\n\
             artifacts_on_failure = [\"tests/*.log\"]\n",
        )
        .expect("parses");
        let (steps, _) = standard_steps(&cfg.targets[0], &cfg.components[0]).expect("pipeline");
        assert_eq!(
            steps[1].run,
            "exec \"$KILN_EXE\" internal rpm-build --executor bwrap --keep-on-failure='tests/*.log'"
        );
        let err = parse("[[component]]\nname = \"x\"\nartifacts_on_failure = [\"/etc/*\"]\n").expect_err("absolute");
        assert!(err.to_string().contains("artifact pattern \"/etc/*\""), "{err}");
    }

    #[test]
    fn rpm_pipeline_steps() {
        let cfg = parse(
            "[[target]]\nname = \"el9\"\nfamily = \"rpm\"\nexecutor = \"bwrap\"\n\
             [[component]]\nname = \"hello\"\nspec = \"rpm/hello.spec\"\n",
        )
        .expect("parses");
        let (steps, _) = standard_steps(&cfg.targets[0], &cfg.components[0]).expect("pipeline");
        assert_eq!(steps[0].run, "exec \"$KILN_EXE\" internal rpm-source --spec 'rpm/hello.spec'");
        assert_eq!(steps[1].run, "exec \"$KILN_EXE\" internal rpm-build --executor bwrap");
        assert!(parse("[[component]]\nname = \"x\"\nspec = \"../x.spec\"\n").is_err());
    }

    #[test]
    fn sbuild_and_mock_pipelines() {
        let cfg = parse(
            "[[target]]\nname = \"d12\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"http://deb.example.org/debian\"\nexecutor = \"sbuild\"\n\
             [[target]]\nname = \"el9\"\nfamily = \"rpm\"\nexecutor = \"mock\"\nmock_config = \"rocky-9-x86_64\"\n\
             [[component]]\nname = \"hello\"\n",
        )
        .expect("parses");
        let (steps, _) = standard_steps(&cfg.targets[0], &cfg.components[0]).expect("pipeline");
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["source", "root", "build"]);
        assert!(steps[1].run.ends_with(" --tarball-only"), "{}", steps[1].run);
        assert_eq!(steps[2].run, "exec \"$KILN_EXE\" internal deb-build --executor sbuild --suite 'bookworm'");
        let (steps, _) = standard_steps(&cfg.targets[1], &cfg.components[0]).expect("pipeline");
        assert_eq!(
            steps[1].run,
            "exec \"$KILN_EXE\" internal rpm-build --executor mock --mock-config 'rocky-9-x86_64'"
        );
    }

    #[test]
    fn standard_steps_are_named_from_step_names() {
        let cfg = parse(
            "[[target]]\nname = \"d-bwrap\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"http://deb.example.org/debian\"\n\
             [[target]]\nname = \"d-sbuild\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"http://deb.example.org/debian\"\nexecutor = \"sbuild\"\n\
             [[target]]\nname = \"d-host\"\nfamily = \"deb\"\nsuite = \"bookworm\"\nmirror = \"http://deb.example.org/debian\"\nexecutor = \"host\"\n\
             [[target]]\nname = \"r-bwrap\"\nfamily = \"rpm\"\n\
             [[target]]\nname = \"r-mock\"\nfamily = \"rpm\"\nexecutor = \"mock\"\nmock_config = \"rocky-9-x86_64\"\n\
             [[component]]\nname = \"hello\"\nsource = { git = \"https://git.example.org/hello.git\" }\n",
        )
        .expect("parses");
        let component = &cfg.components[0];
        let Some(crate::config::Source::Vcs(git)) = &component.source else { panic!("a git source") };
        let mut names = vec![checkout_step(git).name];
        for target in &cfg.targets {
            let (steps, _) = standard_steps(target, component).expect("pipeline");
            names.extend(steps.into_iter().map(|s| s.name));
        }
        for name in names {
            assert!(STEP_NAMES.contains(&name.as_str()), "{name} is missing from STEP_NAMES");
        }
    }

    #[test]
    fn a_deb_target_without_suite_cannot_run_the_pipeline() {
        let errs = parse("[[target]]\nname = \"d\"\nfamily = \"deb\"\n[[component]]\nname = \"hello\"\n")
            .expect_err("needs suite and mirror")
            .render("f");
        assert!(errs.contains("standard deb pipeline, which needs `suite` and `mirror` on target \"d\""), "{errs}");
    }
}
