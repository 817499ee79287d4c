//! Synthetic GENIA-like nested NER: biomedical sentences over DNA, RNA, protein, cell_type
//! and cell_line, with nested mentions (a protein inside a gene, a gene inside a transcript).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{SynthConfig, pick, rng};
use crate::error::Result;
use crate::load::genia::ner_record;
use crate::record::NerRecord;

/// A filler phrase: its tokens (space-separated) and entities as (start, end, type) token
/// spans relative to the phrase.
type Filler = (&'static str, &'static [(usize, usize, &'static str)]);

const PROTEIN: &[Filler] = &[
    ("IL-2", &[(0, 1, "protein")]),
    ("NF-kappa B", &[(0, 2, "protein")]),
    ("c-Jun", &[(0, 1, "protein")]),
    ("CD28", &[(0, 1, "protein")]),
    ("interleukin-6", &[(0, 1, "protein")]),
    ("STAT3", &[(0, 1, "protein")]),
    ("GATA-1", &[(0, 1, "protein")]),
    ("tumor necrosis factor alpha", &[(0, 4, "protein")]),
    (
        "CD28 surface receptor",
        &[(0, 3, "protein"), (0, 1, "protein")],
    ),
    (
        "IL-2 receptor alpha chain",
        &[(0, 4, "protein"), (0, 1, "protein")],
    ),
];
const DNA: &[Filler] = &[
    ("IL-2 gene", &[(0, 2, "DNA"), (0, 1, "protein")]),
    ("kappa B site", &[(0, 3, "DNA")]),
    ("IL-6 promoter", &[(0, 2, "DNA"), (0, 1, "protein")]),
    ("GATA-1 binding motif", &[(0, 3, "DNA"), (0, 1, "protein")]),
    ("5' flanking region", &[(0, 3, "DNA")]),
    ("c-fos enhancer", &[(0, 2, "DNA")]),
    ("STAT3 binding site", &[(0, 3, "DNA"), (0, 1, "protein")]),
];
const RNA: &[Filler] = &[
    ("IL-2 mRNA", &[(0, 2, "RNA"), (0, 1, "protein")]),
    ("c-myc mRNA", &[(0, 2, "RNA")]),
    ("GATA-1 transcripts", &[(0, 2, "RNA"), (0, 1, "protein")]),
    ("globin mRNA", &[(0, 2, "RNA")]),
];
const CELL_TYPE: &[Filler] = &[
    ("T cells", &[(0, 2, "cell_type")]),
    ("human monocytes", &[(0, 2, "cell_type")]),
    ("peripheral blood lymphocytes", &[(0, 3, "cell_type")]),
    ("B cells", &[(0, 2, "cell_type")]),
    ("CD4+ T cells", &[(0, 3, "cell_type"), (0, 1, "protein")]),
    ("erythroid progenitors", &[(0, 2, "cell_type")]),
];
const CELL_LINE: &[Filler] = &[
    ("Jurkat cells", &[(0, 2, "cell_line")]),
    ("HeLa cells", &[(0, 2, "cell_line")]),
    ("U937 cells", &[(0, 2, "cell_line")]),
    ("Jurkat T cells", &[(0, 3, "cell_line")]),
    ("K562 cells", &[(0, 2, "cell_line")]),
];

const TEMPLATES: &[&str] = &[
    "Expression of {RNA} was induced in {CT} .",
    "{P} activates the {DNA} in {CL} .",
    "We show that {P} and {P} cooperate to regulate the {DNA} .",
    "Treatment of {CL} with {P} increased {RNA} levels .",
    "The {DNA} is required for {P} binding in {CT} .",
    "These results suggest a role for {P} in {CT} differentiation .",
    "No binding of {P} was detected in {CL} .",
    "The mechanism of this effect remains unclear .",
    "Levels of {RNA} were measured in {CT} and {CL} .",
    "Mutation of the {DNA} abolished induction by {P} .",
    "In contrast , {CT} did not respond to stimulation .",
    "{P} is constitutively expressed in {CL} but not in {CT} .",
];

/// Generates `count` sentences; ids are `{prefix}/{index}`. Higher difficulty favours
/// templates with more (and more nested) entities.
pub fn generate(
    config: &SynthConfig,
    seed: u64,
    count: usize,
    id_prefix: &str,
) -> Result<Vec<NerRecord>> {
    config.validate()?;
    let mut rng = rng(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(sentence(&mut rng, config, format!("{id_prefix}/{i}")));
    }
    Ok(out)
}

fn sentence(rng: &mut ChaCha8Rng, config: &SynthConfig, id: String) -> NerRecord {
    let template = *pick(rng, TEMPLATES);
    let mut tokens: Vec<String> = Vec::new();
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for word in template.split(' ') {
        let fillers = match word {
            "{P}" => PROTEIN,
            "{DNA}" => DNA,
            "{RNA}" => RNA,
            "{CT}" => CELL_TYPE,
            "{CL}" => CELL_LINE,
            _ => {
                tokens.push(word.to_string());
                continue;
            }
        };
        // Harder sets prefer nested fillers (those with more than one entity).
        let nested: Vec<&Filler> = fillers.iter().filter(|f| f.1.len() > 1).collect();
        let filler = if !nested.is_empty() && rng.random_bool(config.difficulty * 0.6) {
            **pick(rng, &nested)
        } else {
            *pick(rng, fillers)
        };
        let base = tokens.len();
        tokens.extend(filler.0.split(' ').map(str::to_string));
        for (s, e, kind) in filler.1 {
            spans.push((base + s, base + e, (*kind).to_string()));
        }
    }
    if config.label_noise > 0.0 && !spans.is_empty() && rng.random_bool(config.label_noise) {
        let k = rng.random_range(0..spans.len());
        spans.remove(k);
    }
    ner_record(id, tokens, spans).expect("template spans lie within the sentence")
}
