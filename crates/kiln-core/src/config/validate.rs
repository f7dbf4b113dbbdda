//! The second stage of parsing: what is only known once every table is
//! read. A component's targets and dependencies exist, its dependencies form
//! no cycle, its `before` and `after` steps keep off the standard
//! pipeline's step names, and the standard pipeline has what it needs on its
//! targets; channels promote to channels; schedules name known components
//! and targets; notifiers have the `[smtp]` or `[irc]` section they send
//! through.

use super::model::{Component, Family, Target, STEP_NAMES};
use super::triggers::NotifyVia;
use super::written::{ChannelAsWritten, ComponentAsWritten, FarmAsWritten, ScheduleAsWritten};
use crate::toml_reader::{Reader, Span};
use std::collections::HashMap;

/// Reports every problem between the tables of `farm`.
pub(super) fn farm(r: &mut Reader<'_>, farm: &FarmAsWritten) {
    // Duplicates are checked too: their names are reported where they are.
    for c in &farm.components {
        component_targets(r, c, &farm.targets);
        wrapping_step_names(r, c);
    }
    let components: Vec<&ComponentAsWritten> = farm.components.iter().filter(|c| !c.duplicate).collect();
    dependencies(r, &components);
    standard_pipelines(r, &components, &farm.targets);
    dependency_cycles(r, &components);
    promotions(r, &farm.channels);
    for s in &farm.schedules {
        schedule_names(r, s, &components, &farm.targets);
    }
    for w in &farm.workers {
        for (t, tspan) in &w.targets {
            if !farm.targets.iter().any(|x| &x.name == t) {
                r.err(tspan, format!("[[worker]] {:?}: unknown target {t:?}", w.def.name));
            }
        }
    }
    notifier_sections(r, farm);
    uploads_taken(r, &components, farm.uploads.require_signature);
    for (name, span) in &farm.retention.1 {
        if !components.iter().any(|c| &c.component.name == name) {
            r.err(span, format!("[retention.component.{name}]: unknown component {name:?}"));
        }
    }
}

/// A component that takes uploads lets an upload publish its packages: only
/// uploads signed by a key of the uploaders' keyring may, not anyone who may
/// upload.
fn uploads_taken(r: &mut Reader<'_>, components: &[&ComponentAsWritten], signed: bool) {
    for c in components.iter().filter(|c| c.component.takes_uploads && !signed) {
        r.err(
            &c.name_span,
            format!(
                "[[component]] {:?}: `takes_uploads = true` lets an upload publish this component's packages; \
                 set [uploads] require_signature = true (with a `keyring` of who may)",
                c.component.name
            ),
        );
    }
}

/// A component's `targets` are targets of the farm.
fn component_targets(r: &mut Reader<'_>, c: &ComponentAsWritten, targets: &[Target]) {
    for (tname, tspan) in c.targets.iter().flatten() {
        if !targets.iter().any(|t| &t.name == tname) {
            let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            r.err(
                tspan,
                format!(
                    "component {:?}: unknown target {tname:?}; known targets: {}",
                    c.component.name,
                    known.join(", ")
                ),
            );
        }
    }
}

/// A component's `before` and `after` steps have names of their own, none
/// of them one the standard pipeline uses.
fn wrapping_step_names(r: &mut Reader<'_>, c: &ComponentAsWritten) {
    let (before, after) = (&c.component.before, &c.component.after);
    for s in before.iter().chain(after) {
        if STEP_NAMES.contains(&s.name.as_str()) || before.iter().chain(after).filter(|o| o.name == s.name).count() > 1
        {
            r.err(
                &c.span,
                format!(
                    "component {:?}: step {:?} of `before`/`after` must differ from the others and from the pipeline's ({})",
                    c.component.name,
                    s.name,
                    STEP_NAMES.join(", ")
                ),
            );
        }
    }
}

/// Dependencies name other components of the farm.
fn dependencies(r: &mut Reader<'_>, components: &[&ComponentAsWritten]) {
    for c in components {
        let name = &c.component.name;
        for (dep, span) in &c.depends_on {
            if dep == name {
                r.err(span, format!("component {name:?} depends on itself"));
            } else if !components.iter().any(|o| &o.component.name == dep) {
                let known: Vec<&str> = components.iter().map(|o| o.component.name.as_str()).collect();
                r.err(
                    span,
                    format!(
                        "component {name:?} depends on unknown component {dep:?}; known components: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// A component without `steps` builds with its targets' standard pipeline,
/// which on a deb target needs the target's `suite` and `mirror`.
fn standard_pipelines(r: &mut Reader<'_>, components: &[&ComponentAsWritten], targets: &[Target]) {
    for c in components.iter().filter(|c| c.component.steps.is_empty()) {
        let on = |t: &&Target| c.component.targets.as_ref().is_none_or(|names| names.contains(&t.name));
        for t in targets.iter().filter(on) {
            if t.family == Family::Deb && (t.suite.is_none() || t.mirror.is_none()) {
                r.err(
                    &c.name_span,
                    format!(
                        "component {:?} has no `steps`, so it builds with the standard deb pipeline, \
                         which needs `suite` and `mirror` on target {:?}",
                        c.component.name, t.name
                    ),
                );
            }
        }
    }
}

/// Each dependency cycle, reported at a dependency of its first member.
fn dependency_cycles(r: &mut Reader<'_>, components: &[&ComponentAsWritten]) {
    let models: Vec<&Component> = components.iter().map(|c| &c.component).collect();
    for cycle in cycles(&models) {
        let first = &cycle[0];
        let span = components
            .iter()
            .find(|c| &c.component.name == first)
            .and_then(|c| c.depends_on.iter().find(|(d, _)| cycle.contains(d)))
            .and_then(|(_, s)| s.clone());
        let mut path = cycle.clone();
        path.push(first.clone());
        r.err(&span, format!("dependency cycle: {}", path.join(" -> ")));
    }
}

/// Each dependency cycle once, as the list of its members in order.
fn cycles(components: &[&Component]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = components.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let edges: Vec<Vec<usize>> = components
        .iter()
        .map(|c| c.depends_on.iter().filter(|d| *d != &c.name).filter_map(|d| index.get(d.as_str()).copied()).collect())
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; components.len()];
    let mut cycles = Vec::new();
    fn visit(n: usize, edges: &[Vec<usize>], mark: &mut [u8], stack: &mut Vec<usize>, cycles: &mut Vec<Vec<usize>>) {
        mark[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if mark[m] == 1 {
                if let Some(pos) = stack.iter().position(|&s| s == m) {
                    cycles.push(stack[pos..].to_vec());
                }
            } else if mark[m] == 0 {
                visit(m, edges, mark, stack, cycles);
            }
        }
        stack.pop();
        mark[n] = 2;
    }
    let mut found = Vec::new();
    for n in 0..components.len() {
        if mark[n] == 0 {
            visit(n, &edges, &mut mark, &mut Vec::new(), &mut found);
        }
    }
    for c in found {
        cycles.push(c.into_iter().map(|i| components[i].name.clone()).collect());
    }
    cycles
}

/// A channel promotes to another channel of the farm.
fn promotions(r: &mut Reader<'_>, channels: &[ChannelAsWritten]) {
    for c in channels {
        for (t, tspan) in &c.promote_to {
            if !channels.iter().any(|o| &o.channel.name == t) || t == &c.channel.name {
                let known: Vec<&str> = channels.iter().map(|o| o.channel.name.as_str()).collect();
                r.err(
                    tspan,
                    format!(
                        "channel {:?} promotes to unknown channel {t:?}; known channels: {}",
                        c.channel.name,
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// A schedule's `components` and `targets` are components and targets of the farm.
fn schedule_names(r: &mut Reader<'_>, s: &ScheduleAsWritten, components: &[&ComponentAsWritten], targets: &[Target]) {
    let what = format!("schedule {:?}", s.name);
    for (c, cspan) in &s.components {
        if !components.iter().any(|x| &x.component.name == c) {
            r.err(cspan, format!("{what}: unknown component {c:?}"));
        }
    }
    for (t, tspan) in &s.targets {
        if !targets.iter().any(|x| &x.name == t) {
            r.err(tspan, format!("{what}: unknown target {t:?}"));
        }
    }
}

/// Notifiers that send mail or post to IRC have the section saying how.
fn notifier_sections(r: &mut Reader<'_>, farm: &FarmAsWritten) {
    let file: Span = Some(0..0);
    if farm.smtp.is_none() && farm.notifiers.iter().any(|n| matches!(n.via, NotifyVia::Email { .. })) {
        r.err(&file, "a notifier sends mail but there is no [smtp] section saying how");
    }
    if farm.irc.is_none() && farm.notifiers.iter().any(|n| matches!(n.via, NotifyVia::Irc { .. })) {
        r.err(&file, "a notifier posts to IRC but there is no [irc] section naming the server");
    }
}
