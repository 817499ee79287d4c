//! Dataset recipes: TOML files under `datasets/` that say where a dataset's files are, how to
//! read them, which splits and sizes to expect, how labels map, and which named aspect subsets
//! (the study's D1/D2) exist.
//!
//! ```toml
//! name = "mams-acsa"
//! description = "MAMS aspect-category sentiment"
//! task = "masa"              # masa | ner | event
//! loader = "acsa-xml"        # see LoaderKind
//! seed = 0
//!
//! [options]
//! conflict = "neutral"       # acsa-xml only: neutral | drop-label | drop-record
//!
//! [[aspects]]                # the label space, in canonical order
//! key = "food"
//! source = "food"            # name in the source files (defaults to key)
//! en = "food"                # display names (default to key)
//! zh = "食物"
//!
//! [domains]                  # named subsets; `all` (every aspect) always exists
//! d1 = ["food", "menu", "price", "staff"]
//!
//! [[splits]]
//! name = "train"
//! files = ["mams/MAMS-ACSA/train.xml"]   # relative to the data root
//! size = 3149                # checked after loading
//! range = [0, 3149]          # optional: keep records start..end of what the files give
//! part = { of = 5, keep = [0, 1, 2, 3] }  # optional: keep records whose text hashes into
//!                            # these of 5 buckets (an order-free, reproducible holdout)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::load::{self, LoadReport, acsa};
use crate::record::{AspectDef, Domain, Record, TaskKind};
use crate::synth::{self, SynthConfig};

/// How a recipe's files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoaderKind {
    /// SemEval-2014 / MAMS aspect-category XML ([`load::acsa`]).
    AcsaXml,
    /// SentiHood JSON ([`load::sentihood`]).
    SentihoodJson,
    /// ASAP CSV ([`load::asap`]).
    AsapCsv,
    /// The study's GENIA JSON ([`load::genia::load_json`]).
    GeniaJson,
    /// The raw GENIA 3.02 corpus, tgz or XML ([`load::genia::load_raw`]).
    GeniaRaw,
    /// GENIA in CNN-Nested-NER JSON Lines ([`load::genia::load_jsonlines`]).
    GeniaJsonlines,
    /// Few-shot ED MAVEN parts ([`load::maven::load_fewshot`]).
    MavenFewshotJson,
    /// The study's heuristic MAVEN prompts ([`load::maven::load_heuristic_prompts`]).
    MavenHeuristicJsonl,
    /// CoNLL-2003 ([`load::conll`]).
    Conll2003,
    /// Seeded synthetic generator ([`synth`]); needs no files.
    Synthetic,
}

/// One entry of a recipe's label space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AspectSpec {
    /// Key used in records.
    pub key: String,
    /// Name in the source files (category, column, type); defaults to `key`.
    #[serde(default)]
    pub source: Option<String>,
    /// English display name; defaults to `key`.
    #[serde(default)]
    pub en: Option<String>,
    /// Chinese display name; defaults to the English name.
    #[serde(default)]
    pub zh: Option<String>,
}

impl AspectSpec {
    /// The name this aspect has in the source files.
    pub fn source_name(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.key)
    }

    /// The aspect's definition with display names filled in.
    pub fn def(&self) -> AspectDef {
        let en = self.en.clone().unwrap_or_else(|| self.key.clone());
        let zh = self.zh.clone().unwrap_or_else(|| en.clone());
        AspectDef {
            key: self.key.clone(),
            en,
            zh,
        }
    }
}

/// One split of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Split name (`train`, `dev`, `test`, ...).
    pub name: String,
    /// Source files relative to the data root, read in order and concatenated.
    #[serde(default)]
    pub files: Vec<String>,
    /// Expected number of records; loading fails if it differs. For synthetic recipes, the
    /// number of records generated.
    #[serde(default)]
    pub size: Option<usize>,
    /// Keep only records `start..end` of what the files give.
    #[serde(default)]
    pub range: Option<[usize; 2]>,
    /// Keep only records whose text falls into some buckets of a hash partition (applied
    /// after `range`).
    #[serde(default)]
    pub part: Option<SplitPart>,
}

/// A reproducible holdout: records are assigned to one of `of` buckets by a 64-bit FNV-1a
/// hash of their text (so the assignment does not depend on file order or record ids), and
/// the split keeps those in `keep`. Two splits with disjoint `keep` lists never share a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPart {
    /// Number of buckets.
    pub of: u32,
    /// Buckets kept, each below `of`.
    pub keep: Vec<u32>,
}

impl SplitPart {
    /// The bucket of a record text.
    pub fn bucket(&self, text: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % u64::from(self.of.max(1))) as u32
    }
}

/// Loader options a recipe may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeOptions {
    /// What `conflict` polarities become (acsa-xml).
    #[serde(default)]
    pub conflict: acsa::ConflictPolicy,
    /// Generator knobs (synthetic).
    #[serde(default)]
    pub synthetic: Option<SynthConfig>,
}

/// A dataset recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Unique name; `Recipe::find` looks recipes up by it.
    pub name: String,
    /// One line saying what the dataset is.
    #[serde(default)]
    pub description: String,
    /// Task family of every record.
    pub task: TaskKind,
    /// How the files are read.
    pub loader: LoaderKind,
    /// Seed for anything random (synthetic generation).
    #[serde(default)]
    pub seed: u64,
    /// Loader options.
    #[serde(default)]
    pub options: RecipeOptions,
    /// The label space (aspects, entity types or event types) in canonical order.
    #[serde(default)]
    pub aspects: Vec<AspectSpec>,
    /// Named subsets of aspect keys.
    #[serde(default)]
    pub domains: BTreeMap<String, Vec<String>>,
    /// Splits in order.
    pub splits: Vec<SplitSpec>,
    /// Where the recipe was read from.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// Synthetic recipes compiled into the crate, usable with no recipe directory or data root.
pub const EMBEDDED: [(&str, &str); 3] = [
    (
        "synthetic-masa",
        include_str!("../../../datasets/synthetic-masa.toml"),
    ),
    (
        "synthetic-ner",
        include_str!("../../../datasets/synthetic-ner.toml"),
    ),
    (
        "synthetic-event",
        include_str!("../../../datasets/synthetic-event.toml"),
    ),
];

/// The environment variable that overrides the recipe directory.
pub const RECIPES_DIR_ENV: &str = "SDE_RECIPES_DIR";

/// The environment variable holding the data root.
pub const DATA_ROOT_ENV: &str = "SDE_DATA_ROOT";

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: impl AsRef<Path>) -> Result<Recipe> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, "read", e))?;
        Recipe::parse(&text, path)
    }

    /// Parses and validates recipe TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Recipe> {
        let mut recipe: Recipe =
            toml::from_str(text).map_err(|e| DataError::recipe(origin, e.to_string()))?;
        recipe.origin = origin.to_path_buf();
        recipe.validate()?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<()> {
        let err = |m: String| Err(DataError::recipe(&self.origin, m));
        if self.name.is_empty() {
            return err("`name` is empty".into());
        }
        if self.splits.is_empty() {
            return err("no [[splits]]".into());
        }
        let mut keys = std::collections::BTreeSet::new();
        for a in &self.aspects {
            if !keys.insert(a.key.as_str()) {
                return err(format!("aspect key `{}` appears twice", a.key));
            }
        }
        for (name, members) in &self.domains {
            for m in members {
                if !keys.contains(m.as_str()) {
                    return err(format!(
                        "domain `{name}` lists `{m}`, which is not an aspect key"
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.splits {
            if !names.insert(s.name.as_str()) {
                return err(format!("split `{}` appears twice", s.name));
            }
            if self.loader == LoaderKind::Synthetic {
                if s.size.is_none() {
                    return err(format!("synthetic split `{}` needs a `size`", s.name));
                }
            } else if s.files.is_empty() {
                return err(format!("split `{}` lists no files", s.name));
            }
            if let Some([a, b]) = s.range
                && a > b
            {
                return err(format!("split `{}`: range start {a} > end {b}", s.name));
            }
            if let Some(p) = &s.part
                && (p.of == 0 || p.keep.is_empty() || p.keep.iter().any(|k| *k >= p.of))
            {
                return err(format!(
                    "split `{}`: part needs of > 0 and a non-empty keep list of buckets below {}",
                    s.name, p.of
                ));
            }
        }
        let task_of_loader = match self.loader {
            LoaderKind::AcsaXml | LoaderKind::SentihoodJson | LoaderKind::AsapCsv => {
                Some(TaskKind::Masa)
            }
            LoaderKind::GeniaJson
            | LoaderKind::GeniaRaw
            | LoaderKind::GeniaJsonlines
            | LoaderKind::Conll2003 => Some(TaskKind::Ner),
            LoaderKind::MavenFewshotJson | LoaderKind::MavenHeuristicJsonl => Some(TaskKind::Event),
            LoaderKind::Synthetic => None,
        };
        if let Some(t) = task_of_loader
            && t != self.task
        {
            return err(format!(
                "loader {:?} produces {t:?} records but task is {:?}",
                self.loader, self.task
            ));
        }
        Ok(())
    }

    /// The recipe directory: `$SDE_RECIPES_DIR`, else the workspace's `datasets/`.
    pub fn recipes_dir() -> PathBuf {
        match std::env::var_os(RECIPES_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets")),
        }
    }

    /// Finds a recipe by name in [`Recipe::recipes_dir`], falling back to the embedded ones.
    pub fn find(name: &str) -> Result<Recipe> {
        Recipe::find_in(&Recipe::recipes_dir(), name)
    }

    /// Finds a recipe by name in `dir` (any `*.toml` whose `name` matches), falling back to
    /// the embedded ones.
    pub fn find_in(dir: &Path, name: &str) -> Result<Recipe> {
        let all = Recipe::list_in(dir)?;
        let known: Vec<String> = all.iter().map(|r| r.name.clone()).collect();
        all.into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| DataError::RecipeNotFound {
                name: name.to_string(),
                dir: dir.to_path_buf(),
                known: known.join(", "),
            })
    }

    /// Every recipe in [`Recipe::recipes_dir`] plus embedded ones not shadowed by a file.
    pub fn list() -> Result<Vec<Recipe>> {
        Recipe::list_in(&Recipe::recipes_dir())
    }

    /// Every recipe in `dir` (sorted by name) plus embedded ones not shadowed by a file.
    /// A missing directory gives only the embedded recipes.
    pub fn list_in(dir: &Path) -> Result<Vec<Recipe>> {
        let mut recipes = Vec::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "list", e))?;
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                recipes.push(Recipe::load(&p)?);
            }
        }
        for embedded in Recipe::embedded()? {
            if !recipes.iter().any(|r| r.name == embedded.name) {
                recipes.push(embedded);
            }
        }
        recipes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(recipes)
    }

    /// The recipes compiled into the crate (the synthetic sets).
    pub fn embedded() -> Result<Vec<Recipe>> {
        EMBEDDED
            .iter()
            .map(|(name, text)| Recipe::parse(text, Path::new(&format!("<embedded:{name}>"))))
            .collect()
    }

    /// The split named `name`.
    pub fn split(&self, name: &str) -> Result<&SplitSpec> {
        self.splits
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| DataError::UnknownSplit {
                recipe: self.name.clone(),
                split: name.to_string(),
                available: self.split_names().join(", "),
            })
    }

    /// Split names in order.
    pub fn split_names(&self) -> Vec<&str> {
        self.splits.iter().map(|s| s.name.as_str()).collect()
    }

    /// Whether loading needs a data root (every loader but the synthetic one).
    pub fn needs_data_root(&self) -> bool {
        self.loader != LoaderKind::Synthetic
    }

    /// The whole label space as a domain named `all`.
    pub fn all_aspects(&self) -> Domain {
        Domain {
            name: "all".to_string(),
            aspects: self.aspects.iter().map(AspectSpec::def).collect(),
        }
    }

    /// Domain names: `all` and every `[domains]` entry.
    pub fn domain_names(&self) -> Vec<&str> {
        let mut names = vec!["all"];
        names.extend(
            self.domains
                .keys()
                .map(String::as_str)
                .filter(|n| *n != "all"),
        );
        names
    }

    /// The named domain: `all` or a `[domains]` entry, aspects in the listed order.
    pub fn domain(&self, name: &str) -> Result<Domain> {
        if name == "all" && !self.domains.contains_key("all") {
            return Ok(self.all_aspects());
        }
        let members = self.domains.get(name).ok_or_else(|| {
            DataError::recipe(
                &self.origin,
                format!(
                    "no domain `{name}` (known: {})",
                    self.domain_names().join(", ")
                ),
            )
        })?;
        let all = self.all_aspects();
        Ok(Domain {
            name: name.to_string(),
            aspects: members
                .iter()
                .filter_map(|k| all.aspect(k).cloned())
                .collect(),
        })
    }

    /// Source name to key for every aspect.
    fn source_map(&self) -> BTreeMap<String, String> {
        self.aspects
            .iter()
            .map(|a| (a.source_name().to_string(), a.key.clone()))
            .collect()
    }

    /// Loads one split. `data_root` may be `None` for synthetic recipes.
    pub fn load_split(&self, split: &str, data_root: Option<&Path>) -> Result<Vec<Record>> {
        self.load_split_with_report(split, data_root)
            .map(|(r, _)| r)
    }

    /// Loads one split and reports what the loader mapped or dropped.
    pub fn load_split_with_report(
        &self,
        split: &str,
        data_root: Option<&Path>,
    ) -> Result<(Vec<Record>, LoadReport)> {
        let spec = self.split(split)?;
        let mut report = LoadReport::default();
        let mut records: Vec<Record> = Vec::new();
        if self.loader == LoaderKind::Synthetic {
            let config = self.options.synthetic.clone().unwrap_or_default();
            let count = spec.size.unwrap_or(0);
            let seed = synth::split_seed(self.seed, &spec.name);
            let prefix = format!("{}/{}", self.name, spec.name);
            records = match self.task {
                TaskKind::Masa => {
                    let domain = self.all_aspects();
                    synth::masa::generate(&domain, &config, seed, count, &prefix)?
                        .into_iter()
                        .map(Record::Masa)
                        .collect()
                }
                TaskKind::Ner => synth::ner::generate(&config, seed, count, &prefix)?
                    .into_iter()
                    .map(Record::Ner)
                    .collect(),
                TaskKind::Event => synth::event::generate(&config, seed, count, &prefix)?
                    .into_iter()
                    .map(Record::Event)
                    .collect(),
            };
        } else {
            let root = data_root.ok_or_else(|| DataError::DataRootRequired {
                recipe: self.name.clone(),
            })?;
            let multi = spec.files.len() > 1;
            for (i, file) in spec.files.iter().enumerate() {
                let path = root.join(file);
                let prefix = if multi {
                    format!("{}/{}/{i}", self.name, spec.name)
                } else {
                    format!("{}/{}", self.name, spec.name)
                };
                let (mut part, part_report) = self.load_file(&path, &prefix)?;
                records.append(&mut part);
                report.merge(part_report);
            }
        }
        if let Some([a, b]) = spec.range {
            if b > records.len() {
                return Err(DataError::recipe(
                    &self.origin,
                    format!(
                        "split `{}`: range {a}..{b} exceeds the {} records loaded",
                        spec.name,
                        records.len()
                    ),
                ));
            }
            records = records.drain(a..b).collect();
        }
        if let Some(part) = &spec.part {
            records.retain(|r| part.keep.contains(&part.bucket(r.text())));
        }
        if let Some(expected) = spec.size
            && expected != records.len()
        {
            return Err(DataError::SizeMismatch {
                recipe: self.name.clone(),
                split: spec.name.clone(),
                expected,
                found: records.len(),
            });
        }
        Ok((records, report))
    }

    fn load_file(&self, path: &Path, prefix: &str) -> Result<(Vec<Record>, LoadReport)> {
        fn wrap<T>(
            r: Result<(Vec<T>, LoadReport)>,
            f: fn(T) -> Record,
        ) -> Result<(Vec<Record>, LoadReport)> {
            r.map(|(v, rep)| (v.into_iter().map(f).collect(), rep))
        }
        match self.loader {
            LoaderKind::AcsaXml => {
                let options = acsa::AcsaOptions {
                    categories: self.source_map(),
                    conflict: self.options.conflict,
                };
                wrap(load::acsa::load(path, prefix, &options), Record::Masa)
            }
            LoaderKind::SentihoodJson => {
                let map = self.source_map();
                let (mut recs, rep) = load::sentihood::load(path, prefix)?;
                if !map.is_empty() {
                    for r in &mut recs {
                        for l in &mut r.labels {
                            let key = map.get(&l.aspect).ok_or_else(|| {
                                DataError::malformed(
                                    path,
                                    format!("record {}", r.id),
                                    "an aspect listed in the recipe",
                                    format!("{:?}", l.aspect),
                                )
                            })?;
                            l.aspect = key.clone();
                        }
                    }
                }
                Ok((recs.into_iter().map(Record::Masa).collect(), rep))
            }
            LoaderKind::AsapCsv => wrap(
                load::asap::load(path, prefix, &self.source_map()),
                Record::Masa,
            ),
            LoaderKind::GeniaJson => wrap(load::genia::load_json(path, prefix), Record::Ner),
            LoaderKind::GeniaRaw => wrap(load::genia::load_raw(path, prefix), Record::Ner),
            LoaderKind::GeniaJsonlines => {
                wrap(load::genia::load_jsonlines(path, prefix), Record::Ner)
            }
            LoaderKind::MavenFewshotJson => {
                wrap(load::maven::load_fewshot(path, prefix), Record::Event)
            }
            LoaderKind::MavenHeuristicJsonl => wrap(
                load::maven::load_heuristic_prompts(path, prefix),
                Record::Event,
            ),
            LoaderKind::Conll2003 => wrap(load::conll::load(path, prefix), Record::Ner),
            LoaderKind::Synthetic => Ok((Vec::new(), LoadReport::default())),
        }
    }
}

/// The data root from `$SDE_DATA_ROOT`, if set and non-empty.
pub fn data_root_from_env() -> Option<PathBuf> {
    std::env::var_os(DATA_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
