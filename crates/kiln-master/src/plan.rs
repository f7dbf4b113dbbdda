//! What a build runs: its configured component, or for an uploaded source
//! package the standard pipeline over the upload's files.

use crate::farm::LoadedFarm;
use kiln_core::job::{uploaded_component, BuildSource};
use kiln_core::props::Properties;
use kiln_core::Component;
use std::borrow::Cow;

/// The component a build runs: for an uploaded source package, the
/// standard pipeline over the upload's files (even when a component has
/// the same name); else the configured component, if it still is.
pub fn component_of<'a>(farm: &'a LoadedFarm, name: &str, properties: &Properties) -> Option<Cow<'a, Component>> {
    match BuildSource::of(properties) {
        BuildSource::Upload(upload) => {
            let dir = crate::uploads::kept_dir(&farm.data_dir(), &upload);
            Some(Cow::Owned(uploaded_component(name, &dir.display().to_string())))
        }
        BuildSource::Component => farm.cfg.component(name).map(Cow::Borrowed),
    }
}
