//! The config as written, between the two stages of parsing: what `read`
//! makes of each table, with the spans of the names it refers to in other
//! tables, for `validate` to check; and, once no problem is found, the model
//! it becomes, ready to use.

use super::model::{Component, FarmConfig, MasterSection, Schedule, Target, UploadsSection, WorkerDef};
use super::triggers::{Hooks, Irc, Notifier, Smtp};
use crate::channel::Channel;
use crate::cron::CronSpec;
use crate::toml_reader::Span;
use std::collections::BTreeMap;

/// A farm config as written: every table read on its own, with the spans
/// of the names it refers to in other tables.
pub(super) struct FarmAsWritten {
    pub(super) master: Option<MasterSection>,
    pub(super) workers: Vec<WorkerAsWritten>,
    pub(super) targets: Vec<Target>,
    pub(super) components: Vec<ComponentAsWritten>,
    pub(super) channels: Vec<ChannelAsWritten>,
    pub(super) schedules: Vec<ScheduleAsWritten>,
    pub(super) notifiers: Vec<Notifier>,
    pub(super) hooks: Hooks,
    pub(super) smtp: Option<Smtp>,
    pub(super) irc: Option<Irc>,
    pub(super) uploads: UploadsSection,
    /// `[retention]`, and the spans of the components it has rules for.
    pub(super) retention: (super::retention::Retention, Vec<(String, Span)>),
}

/// A `[[worker]]` table with a valid, unique name, and the spans of its `targets`.
pub(super) struct WorkerAsWritten {
    pub(super) def: WorkerDef,
    pub(super) targets: Vec<(String, Span)>,
}

/// A `[[component]]` table with a valid name.
pub(super) struct ComponentAsWritten {
    pub(super) component: Component,
    /// The table's span, and its name's.
    pub(super) span: Span,
    pub(super) name_span: Span,
    /// Its `depends_on` and `targets` entries, with their spans.
    pub(super) depends_on: Vec<(String, Span)>,
    pub(super) targets: Option<Vec<(String, Span)>>,
    /// An earlier component has its name. That is reported, the table is
    /// read no further (`collapse`, `rebuild_after` and `secrets` stay at
    /// their defaults), and the component is left out of the config.
    pub(super) duplicate: bool,
}

/// A `[[channel]]` (or a default channel), with the spans of its `promote_to` entries.
pub(super) struct ChannelAsWritten {
    pub(super) channel: Channel,
    pub(super) promote_to: Vec<(String, Span)>,
}

/// A `[[schedule]]` with a valid, unique name.
pub(super) struct ScheduleAsWritten {
    pub(super) name: String,
    /// The cron expression, parsed and as written; `None` when it is not valid.
    pub(super) cron: Option<(CronSpec, String)>,
    pub(super) timezone: Option<String>,
    /// Its `components` entries other than `*`, and its `targets` entries, with their spans.
    pub(super) components: Vec<(String, Span)>,
    pub(super) targets: Vec<(String, Span)>,
    pub(super) properties: BTreeMap<String, String>,
    pub(super) only_if_changed: bool,
}

impl FarmAsWritten {
    /// The model, ready to use: spans dropped, and what could not be used
    /// (duplicates, schedules without a valid `cron`) left out. Meant for a
    /// config in which no problem was found.
    pub(super) fn into_config(self) -> FarmConfig {
        FarmConfig {
            master: self.master.unwrap_or_default(),
            workers: self.workers.into_iter().map(|w| w.def).collect(),
            targets: self.targets,
            components: self.components.into_iter().filter(|c| !c.duplicate).map(|c| c.component).collect(),
            channels: self.channels.into_iter().map(|c| c.channel).collect(),
            schedules: self.schedules.into_iter().filter_map(ScheduleAsWritten::into_schedule).collect(),
            notifiers: self.notifiers,
            hooks: self.hooks,
            smtp: self.smtp,
            irc: self.irc,
            uploads: self.uploads,
            retention: self.retention.0,
        }
    }
}

impl ScheduleAsWritten {
    fn into_schedule(self) -> Option<Schedule> {
        let (cron, cron_text) = self.cron?;
        Some(Schedule {
            name: self.name,
            cron,
            cron_text,
            timezone: self.timezone,
            components: self.components.into_iter().map(|c| c.0).collect(),
            targets: self.targets.into_iter().map(|t| t.0).collect(),
            properties: self.properties,
            only_if_changed: self.only_if_changed,
        })
    }
}
