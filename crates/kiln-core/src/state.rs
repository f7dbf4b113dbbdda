//! The build and step state machines.
//!
//! ```text
//!            ┌──────────► skipped (a dependency did not succeed)
//!  queued ───┼──────────► cancelled (cancelled before it started)
//!    ▲       └─► running ─┬─► succeeded
//!    │                    ├─► failed
//!    └── (worker lost) ───┘─► cancelled
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

impl BuildState {
    pub const ALL: [BuildState; 6] = [
        BuildState::Queued,
        BuildState::Running,
        BuildState::Succeeded,
        BuildState::Failed,
        BuildState::Cancelled,
        BuildState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
            BuildState::Skipped => "skipped",
        }
    }

    /// How bad a state is when several builds share one cell (a collapsed
    /// console column, a group's last result): the worst one shows.
    pub fn severity(self) -> u8 {
        match self {
            BuildState::Failed => 6,
            BuildState::Cancelled => 5,
            BuildState::Running => 4,
            BuildState::Queued => 3,
            BuildState::Skipped => 2,
            BuildState::Succeeded => 1,
        }
    }

    /// A finished build never changes state again.
    pub fn is_finished(self) -> bool {
        !matches!(self, BuildState::Queued | BuildState::Running)
    }

    /// Whether the state machine allows `self -> to`.
    pub fn can_become(self, to: BuildState) -> bool {
        use BuildState::*;
        matches!(
            (self, to),
            (Queued, Running | Cancelled | Skipped) | (Running, Succeeded | Failed | Cancelled | Queued)
        )
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BuildState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown build state {s:?}; known: {}", BuildState::ALL.map(|s| s.as_str()).join(", "))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
            StepState::Skipped => "skipped",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, StepState::Pending | StepState::Running)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use StepState::*;
        [Pending, Running, Succeeded, Failed, Cancelled, Skipped]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown step state {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use BuildState::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Queued));
        assert!(!Succeeded.can_become(Running));
        assert!(!Skipped.can_become(Queued));
        assert!(!Queued.can_become(Succeeded));
        for s in BuildState::ALL {
            assert_eq!(s.as_str().parse::<BuildState>(), Ok(s));
        }
        assert!("bogus".parse::<BuildState>().is_err());
    }
}
