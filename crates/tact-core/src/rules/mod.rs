//! Rule types with their own evaluation, one file each (see ARCHITECTURE.md, "Adding
//! a rule type").

pub(crate) mod answer_first;
pub(crate) mod fatigue;
