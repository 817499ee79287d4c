//! What the report needs to know about the study's named designs: their option group and axis
//! values (for the design-axis columns of `results.parquet`), and whether they carry an
//! instruction. Designs stay strings everywhere else; rendering them is `sde-format`'s job.

/// Axis values of a named design, as the study names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesignAxes {
    /// Option group of the study's taxonomy (`baseline`, `instruction`, `input modeling`, ...).
    pub group: &'static str,
    /// Instruction placement: `inst-first`, `inst-last` or `no-inst`.
    pub placement: &'static str,
    /// Loss scope: `no-mi` or `mi`.
    pub loss_on: &'static str,
    /// Output layout: `natural`, `lines`, `json` or `tuples`.
    pub layout: &'static str,
    /// Unmentioned targets: `pu` or `ou`.
    pub unmentioned: &'static str,
    /// Label form: `text` or `numeric`.
    pub labels: &'static str,
    /// Reasoning: `none`, `cot` or `rcot`.
    pub reasoning: &'static str,
}

const BASE: DesignAxes = DesignAxes {
    group: "baseline",
    placement: "inst-last",
    loss_on: "no-mi",
    layout: "natural",
    unmentioned: "pu",
    labels: "text",
    reasoning: "none",
};

/// Axis values of a study design alias for a task (`masa`, `ner`, `event`), if it is one
/// of the study's named designs.
pub fn axes(task: &str, design: &str) -> Option<DesignAxes> {
    let d = |group, f: fn(&mut DesignAxes)| {
        let mut a = BASE;
        a.group = group;
        f(&mut a);
        Some(a)
    };
    match (task, design) {
        ("masa", "baseline" | "inst-last") => Some(BASE),
        ("masa", "inst-first") => d("instruction", |a| a.placement = "inst-first"),
        ("masa", "no-inst") => d("instruction", |a| a.placement = "no-inst"),
        ("masa", "mi") => d("input modeling", |a| a.loss_on = "mi"),
        ("masa", "lines") => d("output format", |a| a.layout = "lines"),
        ("masa", "json") => d("output format", |a| a.layout = "json"),
        ("masa", "ou") => d("unmentioned targets", |a| a.unmentioned = "ou"),
        ("masa", "num") => d("label form", |a| a.labels = "numeric"),
        ("masa", "cot") => d("reasoning", |a| a.reasoning = "cot"),
        ("masa", "rcot") => d("reasoning", |a| a.reasoning = "rcot"),
        (_, "es-sde") => d("combined", |a| {
            a.placement = "inst-first";
            a.layout = "lines";
        }),
        ("masa", "heuristic") => Some(DesignAxes {
            group: "combined",
            ..BASE
        }),
        (_, "ew-sde") => d("combined", |a| a.unmentioned = "ou"),
        (_, "heuristic") => d("combined", |a| {
            a.placement = "inst-first";
            a.layout = "tuples";
            a.unmentioned = "ou";
        }),
        _ => None,
    }
}

/// Whether a design has an instruction (designs without one cannot name unseen aspects, so
/// they are evaluated in-domain only). Unknown ids count as having one unless they say
/// `no-inst`.
pub fn has_instruction(task: &str, design: &str) -> bool {
    match axes(task, design) {
        Some(a) => a.placement != "no-inst",
        None => !design.contains("no-inst"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_variants_differ_from_the_baseline_in_exactly_one_axis() {
        let fields = |a: DesignAxes| {
            [
                a.placement,
                a.loss_on,
                a.layout,
                a.unmentioned,
                a.labels,
                a.reasoning,
            ]
        };
        for d in [
            "inst-first",
            "no-inst",
            "mi",
            "lines",
            "json",
            "ou",
            "num",
            "cot",
            "rcot",
        ] {
            let a = axes("masa", d).unwrap();
            let diff = fields(a)
                .iter()
                .zip(fields(BASE))
                .filter(|(x, y)| *x != y)
                .count();
            assert_eq!(diff, 1, "{d}");
        }
        assert!(!has_instruction("masa", "no-inst"));
        assert!(has_instruction("masa", "lines"));
        assert!(has_instruction("ner", "my-custom-design"));
        assert_eq!(axes("ner", "heuristic").unwrap().layout, "tuples");
        assert_eq!(axes("masa", "es-sde").unwrap().placement, "inst-first");
    }
}
