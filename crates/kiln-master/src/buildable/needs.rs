//! What a build needs, read on the master before it goes to a worker: the
//! source stanza of its `debian/control` (a path source, or the revision
//! of a git source, read from the master's mirror) or its uploaded `.dsc`.
//! The text comes from an untrusted tree: it is only parsed, and bounded.

use crate::events::Check;
use crate::farm::LoadedFarm;
use crate::shared::Shared;
use kiln_core::builddeps::{build_needs, is_checked, BuildNeeds};
use kiln_core::config::{Source, Vcs};
use std::path::Path;

/// The largest control file read.
const MAX_CONTROL: usize = 1 << 20;

/// The build needs of `c`; `None` when it is not one whose needs are checked.
pub async fn of(shared: &Shared, farm: &LoadedFarm, c: &Check) -> Result<Option<BuildNeeds>, String> {
    let Some(component) = crate::plan::component_of(farm, &c.component, &c.properties) else {
        return Ok(None);
    };
    let Some(target) = farm.cfg.target(&c.target) else { return Ok(None) };
    if !is_checked(target, &component) {
        return Ok(None);
    }
    let text = match &component.source {
        None => return Ok(None),
        Some(Source::Path(p)) => control_in(&farm.resolve(p))?,
        Some(Source::Vcs(v)) if v.vcs == Vcs::Git => {
            let path = match &v.subdir {
                Some(sub) => format!("{}/debian/control", sub.trim_end_matches('/')),
                None => "debian/control".to_string(),
            };
            let revision = c.properties.get(kiln_core::props::REVISION).map(|p| p.value.as_str());
            crate::triggers::poller::file_at(&shared.farm().data_dir(), &v.url, &v.branch, revision, &path, MAX_CONTROL)
                .await
                .map_err(|e| format!("cannot read {path} of {}: {e}", kiln_core::redact::url_for_logs(&v.url)))?
        }
        Some(Source::Vcs(_)) => return Err("Mercurial sources are read on the worker only".into()),
    };
    build_needs(&text).map(Some).map_err(|e| format!("its source stanza cannot be read: {e}"))
}

/// The control text of a source tree (`debian/control`) or of an uploaded
/// source package (its one `.dsc`).
fn control_in(dir: &Path) -> Result<String, String> {
    let control = dir.join("debian/control");
    if control.is_file() {
        return read_bounded(&control);
    }
    let dscs: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dsc"))
        .collect();
    match &dscs[..] {
        [dsc] => read_bounded(dsc),
        [] => Err(format!("{} has no debian/control and no .dsc", dir.display())),
        _ => Err(format!("{} has more than one .dsc", dir.display())),
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let bytes = crate::uploads::read_plain(path, MAX_CONTROL as u64)
        .ok_or_else(|| format!("cannot read {} (a plain file of at most {MAX_CONTROL} bytes)", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))
}
