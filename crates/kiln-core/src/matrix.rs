//! Matrix expansion: builders (component × target) and the plan of builds a
//! request makes, with dependency edges inside the request.

use crate::config::{Component, FarmConfig, Target};
use std::collections::HashMap;

/// One builder: a component built on a target.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    pub component: &'a Component,
    pub target: &'a Target,
}

/// Every builder of the farm: components in config order, each on its targets.
pub fn builders(cfg: &FarmConfig) -> impl Iterator<Item = Builder<'_>> {
    cfg.components.iter().flat_map(move |c| cfg.targets_of(c).map(move |t| Builder { component: c, target: t }))
}

/// What a user asks to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSpec {
    pub components: Vec<String>,
    /// Every component of the farm.
    pub all: bool,
    /// Restrict to these targets; empty means each component's every target.
    pub targets: Vec<String>,
}

/// One build of a plan. `depends_on` holds indices of earlier entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBuild {
    pub component: String,
    pub target: String,
    pub depends_on: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("name at least one component, or ask for all of them")]
    NoComponents,
    #[error("unknown component {name:?}; known components: {known}")]
    UnknownComponent { name: String, known: String },
    #[error("unknown target {name:?}; known targets: {known}")]
    UnknownTarget { name: String, known: String },
    #[error("nothing to build: {0}")]
    NothingToBuild(String),
}

/// Expands a request into builds, dependencies first: a component's build on
/// a target depends on the builds of its `depends_on` components on that
/// target within the same request.
pub fn plan(cfg: &FarmConfig, spec: &RequestSpec) -> Result<Vec<PlannedBuild>, PlanError> {
    let known_components = || cfg.components.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let known_targets = || cfg.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
    for t in &spec.targets {
        if cfg.target(t).is_none() {
            return Err(PlanError::UnknownTarget { name: t.clone(), known: known_targets() });
        }
    }
    let mut chosen: Vec<&Component> = Vec::new();
    if spec.all {
        chosen.extend(cfg.components.iter());
    } else {
        if spec.components.is_empty() {
            return Err(PlanError::NoComponents);
        }
        for name in &spec.components {
            let c = cfg
                .component(name)
                .ok_or_else(|| PlanError::UnknownComponent { name: name.clone(), known: known_components() })?;
            if !chosen.iter().any(|x| x.name == c.name) {
                chosen.push(c);
            }
        }
    }
    let ordered = dependency_order(&chosen);
    let mut plan: Vec<PlannedBuild> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for c in ordered {
        for t in cfg.targets_of(c) {
            if !spec.targets.is_empty() && !spec.targets.contains(&t.name) {
                continue;
            }
            let depends_on =
                c.depends_on.iter().filter_map(|d| index.get(&(d.as_str(), t.name.as_str())).copied()).collect();
            index.insert((c.name.as_str(), t.name.as_str()), plan.len());
            plan.push(PlannedBuild { component: c.name.clone(), target: t.name.clone(), depends_on });
        }
    }
    if plan.is_empty() {
        let comps: Vec<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
        return Err(PlanError::NothingToBuild(format!(
            "{} do(es) not build on {}",
            comps.join(", "),
            spec.targets.join(", ")
        )));
    }
    Ok(plan)
}

/// Orders components so that each comes after the components it depends on
/// (among those given); ties keep config order. Config validation rules out
/// cycles; should one slip through, the remaining components keep their order.
fn dependency_order<'a>(chosen: &[&'a Component]) -> Vec<&'a Component> {
    let mut out: Vec<&Component> = Vec::with_capacity(chosen.len());
    let mut left: Vec<&Component> = chosen.to_vec();
    while !left.is_empty() {
        let ready = left.iter().position(|c| {
            c.depends_on.iter().all(|d| !left.iter().any(|o| &o.name == d) || out.iter().any(|o| &o.name == d))
        });
        let i = ready.unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}

/// The components to rebuild on `target` now that `published` was
/// published there: those with `rebuild_after = [published]` that build on
/// the target, except the ones `already` says the same request builds
/// there anyway.
pub fn dependents_to_rebuild(
    cfg: &FarmConfig,
    published: &str,
    target: &str,
    already: impl Fn(&str) -> bool,
) -> Vec<String> {
    cfg.components
        .iter()
        .filter(|c| c.rebuild_after.iter().any(|d| d == published) && cfg.builds_on(c, target))
        .filter(|c| !already(&c.name))
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn farm() -> FarmConfig {
        parse(include_str!("../../../examples/farm.toml")).expect("example parses")
    }

    #[test]
    fn dependents_rebuild_on_the_target_unless_the_request_has_them() {
        let cfg = parse(
            r#"
[[worker]]
name = "w1"
token_file = "w1.token"

[[target]]
name = "a"
family = "deb"

[[target]]
name = "b"
family = "deb"

[[component]]
name = "lib"
steps = [{ name = "s", run = "true" }]

[[component]]
name = "app"
depends_on = ["lib"]
rebuild_after = ["lib"]
steps = [{ name = "s", run = "true" }]

[[component]]
name = "tool"
depends_on = ["lib"]
rebuild_after = ["lib"]
targets = ["b"]
steps = [{ name = "s", run = "true" }]
"#,
        )
        .expect("config");
        assert_eq!(dependents_to_rebuild(&cfg, "lib", "a", |_| false), ["app"]);
        assert_eq!(dependents_to_rebuild(&cfg, "lib", "b", |_| false), ["app", "tool"]);
        assert_eq!(dependents_to_rebuild(&cfg, "lib", "b", |c| c == "app"), ["tool"]);
        assert!(dependents_to_rebuild(&cfg, "app", "a", |_| false).is_empty());
    }

    fn names(plan: &[PlannedBuild]) -> Vec<String> {
        plan.iter().map(|b| format!("{}@{}", b.component, b.target)).collect()
    }

    #[test]
    fn all_honours_dependencies() {
        let cfg = farm();
        let p = plan(&cfg, &RequestSpec { all: true, ..Default::default() }).expect("plan");
        assert_eq!(
            names(&p),
            [
                "libgrace@debian-12-amd64",
                "libgrace@el-9-x86_64",
                "opencore@debian-12-amd64",
                "slow@debian-12-amd64",
                "slow@el-9-x86_64",
                "grace-doc@debian-12-amd64"
            ]
        );
        assert_eq!(p[2].depends_on, [0]);
        assert!(p[0].depends_on.is_empty());
    }

    #[test]
    fn dependents_named_first_still_come_after() {
        let cfg = farm();
        let spec = RequestSpec { components: vec!["opencore".into(), "libgrace".into()], ..Default::default() };
        let p = plan(&cfg, &spec).expect("plan");
        assert_eq!(names(&p)[2], "opencore@debian-12-amd64");
        assert_eq!(p[2].depends_on, [0]);
    }

    #[test]
    fn a_dependency_outside_the_request_is_not_waited_for() {
        let cfg = farm();
        let spec = RequestSpec { components: vec!["opencore".into()], ..Default::default() };
        let p = plan(&cfg, &spec).expect("plan");
        assert_eq!(names(&p), ["opencore@debian-12-amd64"]);
        assert!(p[0].depends_on.is_empty());
    }

    #[test]
    fn targets_restrict_and_errors_name_what_is_known() {
        let cfg = farm();
        let spec = RequestSpec {
            components: vec!["libgrace".into()],
            targets: vec!["el-9-x86_64".into()],
            ..Default::default()
        };
        assert_eq!(names(&plan(&cfg, &spec).expect("plan")), ["libgrace@el-9-x86_64"]);
        let spec = RequestSpec {
            components: vec!["opencore".into()],
            targets: vec!["el-9-x86_64".into()],
            ..Default::default()
        };
        assert!(matches!(plan(&cfg, &spec), Err(PlanError::NothingToBuild(_))));
        let spec = RequestSpec { components: vec!["nope".into()], ..Default::default() };
        assert_eq!(
            plan(&cfg, &spec).map_err(|e| e.to_string()),
            Err("unknown component \"nope\"; known components: libgrace, opencore, slow, grace-doc".into())
        );
        let spec =
            RequestSpec { components: vec!["libgrace".into()], targets: vec!["win".into()], ..Default::default() };
        assert!(matches!(plan(&cfg, &spec), Err(PlanError::UnknownTarget { .. })));
        assert_eq!(plan(&cfg, &RequestSpec::default()), Err(PlanError::NoComponents));
    }

    #[test]
    fn seventy_by_twenty_is_fourteen_hundred_builders() {
        let mut text = String::new();
        for t in 0..20 {
            text.push_str(&format!("[[target]]\nname = \"t{t}\"\nfamily = \"deb\"\n"));
        }
        for c in 0..70 {
            text.push_str(&format!("[[component]]\nname = \"c{c}\"\nsteps = [{{ name = \"b\", run = \"true\" }}]\n"));
        }
        let cfg = parse(&text).expect("parses");
        assert_eq!(builders(&cfg).count(), 1400);
    }
}
