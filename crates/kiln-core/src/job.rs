//! What a build runs: where its source comes from ([`BuildSource`]) and the
//! steps and artifact patterns that follow from its component and target
//! ([`steps_for`]). The master turns the result into the worker's job.

use crate::config::{Component, Source, StepSpec, Target};
use crate::pipeline;
pub use crate::props::UPLOAD_PROPERTY;
use crate::props::{Properties, Property, PropertySource};

/// Where a build's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource {
    /// The component's own source: its directory, its git branch (at the
    /// request's `revision`), or nothing.
    Component,
    /// A source package uploaded through the API, by upload id.
    Upload(String),
}

impl BuildSource {
    /// The source a stored build names. An `upload` property that is not a
    /// well-formed upload id (16 hex digits) names none.
    pub fn of(properties: &Properties) -> BuildSource {
        match properties.get(UPLOAD_PROPERTY) {
            Some(p) if p.source == PropertySource::Request && is_upload_id(&p.value) => {
                BuildSource::Upload(p.value.clone())
            }
            _ => BuildSource::Component,
        }
    }

    /// The property that records this source on a build, if any.
    pub fn property(&self) -> Option<(String, Property)> {
        match self {
            BuildSource::Component => None,
            BuildSource::Upload(id) => {
                Some((UPLOAD_PROPERTY.to_string(), Property { value: id.clone(), source: PropertySource::Request }))
            }
        }
    }
}

/// Whether `id` is the shape of an upload id the master hands out.
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The component an uploaded source package builds as: no steps of its own
/// (so the family's standard pipeline), its source the upload's directory.
pub fn uploaded_component(name: &str, upload_dir: &str) -> Component {
    Component {
        name: name.to_string(),
        source: Some(Source::Path(upload_dir.to_string())),
        depends_on: Vec::new(),
        targets: None,
        steps: Vec::new(),
        before: Vec::new(),
        after: Vec::new(),
        properties: Default::default(),
        artifacts: Vec::new(),
        artifacts_on_failure: Vec::new(),
        adopts: Vec::new(),
        spec: None,
        orig: Default::default(),
        timeout: None,
        no_output_timeout: None,
        memory: None,
        millicpus: None,
        collapse: false,
        takes_uploads: false,
        rebuild_after: Vec::new(),
        secrets: Default::default(),
    }
}

/// One step of a build, and whether it keeps the worker's privileges
/// (kiln's own steps: the checkout and the standard pipeline, which
/// sandbox the build themselves). A component's own steps never do.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub spec: StepSpec,
    pub privileged: bool,
}

/// The steps of a build and the artifact patterns it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub steps: Vec<PlannedStep>,
    pub artifacts: Vec<String>,
    /// What the worker keeps, of the work dir, when the build fails.
    pub artifacts_on_failure: Vec<String>,
}

/// Why a build cannot be given steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepsError {
    #[error("target {0} is no longer in the config")]
    NoTarget(String),
    #[error("{0}")]
    Pipeline(String),
}

/// The steps `component` runs on `target`: a git checkout first when it
/// builds from git; then its own steps, or (without steps) its family's
/// standard pipeline wrapped in its `before`/`after` steps.
pub fn steps_for(target_name: &str, target: Option<&Target>, component: &Component) -> Result<StepPlan, StepsError> {
    let (specs, artifacts, artifacts_on_failure, pipeline) = if component.steps.is_empty() {
        let target = target.ok_or_else(|| StepsError::NoTarget(target_name.to_string()))?;
        let (steps, mut artifacts) = pipeline::standard_steps(target, component).map_err(StepsError::Pipeline)?;
        artifacts.extend(component.artifacts.iter().cloned());
        // The pipeline's build helper copies the build tree's logs there.
        (steps, artifacts, vec![format!("{}/**", pipeline::FAILURE_DIR)], true)
    } else {
        (component.steps.clone(), component.artifacts.clone(), component.artifacts_on_failure.clone(), false)
    };
    let checkout = match &component.source {
        Some(Source::Vcs(git)) => Some(pipeline::checkout_step(git)),
        _ => None,
    };
    let (before, after) = if pipeline { (&component.before[..], &component.after[..]) } else { (&[][..], &[][..]) };
    let plain = |s: &StepSpec| PlannedStep { spec: s.clone(), privileged: false };
    let steps = checkout
        .into_iter()
        .map(|spec| PlannedStep { spec, privileged: true })
        .chain(before.iter().map(plain))
        .chain(specs.into_iter().map(|spec| PlannedStep { spec, privileged: pipeline }))
        .chain(after.iter().map(plain))
        .collect();
    Ok(StepPlan { steps, artifacts, artifacts_on_failure })
}

/// Whether an artifact's file name is a package a channel publishes (by
/// extension; source RPMs are kept but not published).
pub fn is_package(name: &str) -> bool {
    !name.starts_with(pipeline::FAILURE_PREFIX)
        && (name.ends_with(".deb") || name.ends_with(".udeb") || name.ends_with(".dsc") || name.ends_with(".rpm"))
        && !name.ends_with(".src.rpm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> crate::FarmConfig {
        crate::config::parse(
            r#"
[[worker]]
name = "w1"
token_file = "w1.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
mirror = "http://127.0.0.1:9/debian"

[[component]]
name = "shell"
steps = [{ name = "make", run = "make" }]

[[component]]
name = "pkg"
source = { git = "https://example.org/pkg.git" }
before = [{ name = "stamp", run = "date" }]
"#,
        )
        .expect("config")
    }

    #[test]
    fn an_upload_source_is_read_back_from_its_property() {
        let mut props = Properties::new();
        assert_eq!(BuildSource::of(&props), BuildSource::Component);
        let upload = BuildSource::Upload("0123456789abcdef".into());
        let (k, v) = upload.property().expect("property");
        props.insert(k, v);
        assert_eq!(BuildSource::of(&props), upload);
        // A value that is not an upload id names no upload.
        props.insert(UPLOAD_PROPERTY.into(), Property { value: "../x".into(), source: PropertySource::Request });
        assert_eq!(BuildSource::of(&props), BuildSource::Component);
    }

    #[test]
    fn own_steps_run_unprivileged_and_the_pipeline_is_wrapped() {
        let cfg = config();
        let t = cfg.target("debian-12-amd64");
        let shell = steps_for("debian-12-amd64", t, cfg.component("shell").expect("shell")).expect("steps");
        let names: Vec<(&str, bool)> = shell.steps.iter().map(|s| (s.spec.name.as_str(), s.privileged)).collect();
        assert_eq!(names, [("make", false)]);
        let pkg = steps_for("debian-12-amd64", t, cfg.component("pkg").expect("pkg")).expect("steps");
        let first: Vec<(&str, bool)> = pkg.steps.iter().take(2).map(|s| (s.spec.name.as_str(), s.privileged)).collect();
        assert_eq!(first, [("checkout", true), ("stamp", false)]);
        assert!(pkg.steps[2..].iter().all(|s| s.privileged), "{:?}", pkg.steps);
        assert_eq!(
            steps_for("gone", None, cfg.component("pkg").expect("pkg")),
            Err(StepsError::NoTarget("gone".into()))
        );
    }

    #[test]
    fn an_upload_builds_with_the_standard_pipeline_from_its_directory() {
        let c = uploaded_component("hello", "/data/uploads/0123456789abcdef");
        assert!(c.steps.is_empty());
        assert!(matches!(&c.source, Some(Source::Path(p)) if p.ends_with("0123456789abcdef")));
    }

    #[test]
    fn packages_are_known_by_extension() {
        for p in ["a_1_amd64.deb", "a_1.dsc", "a-1.x86_64.rpm", "a.udeb"] {
            assert!(is_package(p), "{p}");
        }
        for p in ["a-1.src.rpm", "build.log", "a_1.tar.xz"] {
            assert!(!is_package(p), "{p}");
        }
    }
}
