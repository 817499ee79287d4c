//! Collects what a parse noticed and turns it into exactly one [`Status`].

use crate::types::{Issue, Labels, Parsed, PartialCounts, Repair, Status, StudyError};

/// Accumulates issues and repairs while parsing one output.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) issues: Vec<Issue>,
    repairs: Vec<Repair>,
    pub(crate) counts: PartialCounts,
    /// The output stops inside an item.
    pub(crate) truncated: bool,
    /// At least one item was recognised.
    pub(crate) usable: bool,
}

impl Outcome {
    pub(crate) fn repair(&mut self, repair: Repair) {
        if !self.repairs.contains(&repair) {
            self.repairs.push(repair);
            self.issues.push(Issue::Repaired { repair });
        }
    }

    #[cfg(test)]
    pub(crate) fn has_repairs(&self) -> bool {
        !self.repairs.is_empty()
    }

    pub(crate) fn missing(&mut self, key: &str) {
        self.counts.missing += 1;
        self.issues.push(Issue::MissingKey {
            key: key.to_string(),
        });
    }

    pub(crate) fn extra(&mut self, issue: Issue) {
        self.counts.extra += 1;
        self.issues.push(issue);
    }

    pub(crate) fn invalid(&mut self, key: &str, value: &str) {
        self.counts.invalid += 1;
        self.issues.push(Issue::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
        });
    }

    /// Whether anything makes the output less than clean.
    pub(crate) fn is_clean(&self) -> bool {
        self.repairs.is_empty()
            && self.counts == PartialCounts::default()
            && !self.truncated
            && self.usable
    }

    /// The final result. `empty_is_clean`: an empty output is a valid answer (OU designs).
    pub(crate) fn finish(
        mut self,
        text: &str,
        labels: Labels,
        empty_is_clean: bool,
        study_error: Option<StudyError>,
    ) -> Parsed {
        let status = if text.trim().is_empty() {
            if empty_is_clean {
                Status::Clean
            } else {
                self.issues.insert(0, Issue::Empty);
                Status::Empty
            }
        } else if !self.usable {
            self.issues.push(Issue::Unparseable);
            Status::Unparseable
        } else if self.truncated {
            self.issues.push(Issue::Truncated);
            Status::Truncated
        } else if self.counts != PartialCounts::default() {
            Status::Partial(self.counts)
        } else if !self.repairs.is_empty() {
            let mut repairs = self.repairs;
            repairs.sort();
            Status::Repaired { repairs }
        } else {
            Status::Clean
        };
        Parsed {
            labels,
            status,
            issues: self.issues,
            study_error,
        }
    }
}
